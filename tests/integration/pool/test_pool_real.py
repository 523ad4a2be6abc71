"""Warm pools on real crun sandboxes, through our SDK: a claimed sandbox is the user's alone (fresh env,
no files of a previous user, its own id everywhere, its own events) and its kernel was warmed in the pool."""
from __future__ import annotations

import os
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from support.server import CPServer

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")


def wait_ready(c, n, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = c.get("/v1/pools/base").json()
        if row["ready"] == n and row["filling"] == 0:
            return row
        time.sleep(0.2)
    raise AssertionError(f"pool did not reach {n}: {row}")


@pytest.fixture(scope="module")
def real():
    data = Path(tempfile.mkdtemp(prefix="perf-pool-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES,
                   SANDBOXD_POOL="base=2").start()
    yield srv
    try:
        with srv.client() as c:  # members are not sandboxes: drain the pool so nothing is left frozen
            c.put("/v1/pools/base", json={"size": 0})
            wait_ready(c, 0, 60)
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.real
def test_claimed_sandbox_is_fresh_and_its_own(real):
    from sandboxd.sdk import Sandbox

    with real.client() as c:
        row = wait_ready(c, 2)
        assert row["kernel_warm"] == 2  # base has ipykernel: warmed before freezing
    kw = dict(api_key=real.key, api_url=real.base)
    first = Sandbox.create("base", env_vars={"WHO": "alice"}, **kw)
    try:
        first.files.write("/workspace/secret.txt", "alice's")
        first.commands.run("export LEAK=1; echo leak > /tmp/leak")
        first.run_code("alice_var = 41")
        second = Sandbox.create("base", env_vars={"WHO": "bob"}, **kw)
        try:
            with real.client() as c:
                assert c.get("/v1/pools/base").json()["hits"] == 2
            out = second.commands.run("echo $WHO $LEAK; hostname; ls /workspace /tmp").stdout.split()
            assert out[0] == "bob" and out[1] == second.id and "secret.txt" not in out and "leak" not in out
            assert second.run_code("print(WHO_env := __import__('os').environ['WHO'])").stdout.strip() == "bob"
            leaked = second.run_code("alice_var")
            assert leaked.error is not None and leaked.error.name == "NameError"
            ids = {e.sandbox_id for e in second.events(limit=50)}
            assert ids == {second.id} and any(e.type.endswith("created") for e in second.events(limit=50))
            # The template's resources are live on the claimed container's cgroup.
            mem = Path(f"/sys/fs/cgroup/memory/sandboxd/{second.id}/memory.limit_in_bytes")
            if mem.exists():
                assert int(mem.read_text()) == second.get_info().resources["memory_mb"] * 1024 * 1024
            # Members fill at the lowest CPU weight; a claimed sandbox has the default one, like a cold sandbox.
            shares = Path(f"/sys/fs/cgroup/cpu/sandboxd/{second.id}/cpu.shares")
            weight = Path(f"/sys/fs/cgroup/sandboxd/{second.id}/cpu.weight")
            assert int(shares.read_text()) == 1024 if shares.exists() else int(weight.read_text()) == 100
            # ... and the members still waiting are at the lowest weight.
            waiting = [m["id"] for m in json.loads((real.data_dir / "pool.json").read_text())["members"]]
            if shares.exists():
                assert all((shares.parent.parent / w / "cpu.shares").read_text().strip() == "2" for w in waiting
                           if (shares.parent.parent / w).exists())
        finally:
            second.kill()
    finally:
        first.kill()
    with real.client() as c:
        wait_ready(c, 2)  # refilled in the background
