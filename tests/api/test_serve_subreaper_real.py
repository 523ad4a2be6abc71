"""`sandboxd serve` with crun is the child subreaper of its detached containers (marked real)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from cpserver import CPServer

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
pytestmark = pytest.mark.real


def ppid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError("no PPid")


def test_sandbox_init_is_adopted_by_serve():
    data = Path(tempfile.mkdtemp(prefix="roomj-reaper-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES).start()
    try:
        with srv.client() as c:
            sb = c.post("/v1/sandboxes", json={"template_name": "base"}).json()
            init = int((data / "sandboxes" / sb["id"] / "init.pid").read_text())
            # `crun run -d` double-forks: the init's parent is the nearest subreaper, which must be serve.
            assert ppid(init) == srv.proc.pid
            assert c.delete(f"/v1/sandboxes/{sb['id']}").status_code == 200
        # A kill returns once the processes are SIGKILLed; the release (and the reaping) follow at once.
        deadline = time.monotonic() + 10
        left = data / "sandboxes" / sb["id"]
        while (Path(f"/proc/{init}").exists() or left.exists()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not Path(f"/proc/{init}").exists()  # reaped, not left a zombie
        assert not left.exists()  # and its files released
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)
