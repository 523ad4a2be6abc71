"""A template imported from an image without Python (a busybox-only OCI archive in the operator's import
directory), used through our SDK and through the official E2B SDK, on a real crun server: the agent runs on
its own runtime, commands on the image's busybox, and nothing of the runtime reaches them."""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from support.images import busybox_archive
from support.server import CPServer

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
pytestmark = [pytest.mark.real, pytest.mark.skipif(not shutil.which("umoci"), reason="umoci not installed")]
LEAKS = ("PYTHONHOME", "PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "/opt/sandboxd/rt")


@pytest.fixture(scope="module")
def server():
    # Not under pytest's 0700 tmp dir: the sandbox's mapped root must traverse the data dir.
    data = Path(tempfile.mkdtemp(prefix="test-nopy-", dir="/var/tmp"))
    data.chmod(0o755)
    (data / "imports").mkdir()
    busybox_archive(data / "imports" / "busybox.tar")
    srv = CPServer(data / "data", None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES,
                   SANDBOXD_IMPORT_DIR=str(data / "imports"))
    (data / "data").mkdir()
    srv.start()
    srv.template_id = None
    yield srv
    try:
        srv.kill_all_sandboxes()
        if srv.template_id:
            with srv.client() as c:
                c.delete(f"/v1/templates/{srv.template_id}")
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def template(server):
    name = "nopy-busybox-" + secrets.token_hex(3)
    with server.client() as c:
        r = c.post("/v1/templates/build", json={"name": name, "from_image": "oci-archive:busybox.tar", "steps": [
            {"type": "RUN", "args": ["mkdir -p /srv && echo built-by-run > /srv/run.txt"]}],
                                                "cpu": 1, "memory": 512})
        assert r.status_code == 202, r.text
        build_id, server.template_id = r.json()["build_id"], r.json()["template_id"]
        doc = server.wait_build(build_id)
        logs = c.get(f"/v1/templates/build/{server.template_id}/logs").json()
    assert doc["status"] in ("active", "success"), doc
    text = str(logs)
    assert "agent runs on its own runtime" in text and "cannot start" not in text and "warning" not in text, text
    return name


def test_our_sdk_runs_commands_files_and_says_python_is_missing(server, template):
    from sandboxd import Sandbox

    with Sandbox.create(template, api_key=server.api_key, api_url=server.url) as sb:
        r = sb.commands.run("sh -c 'echo hi; id -u; ls /'")
        assert r.exit_code == 0, r
        lines = r.stdout.split("\n")
        assert lines[:2] == ["hi", "0"] and {"bin", "opt", "proc", "tmp"} <= set(lines[2:]), r.stdout
        env = sb.commands.run("env; cat /proc/self/maps").stdout
        assert not [leak for leak in LEAKS if leak in env], env
        sb.files.write("/tmp/nopy/a.txt", "héllo\n")
        assert sb.files.read("/tmp/nopy/a.txt") == "héllo\n"
        assert sb.commands.run("cat /tmp/nopy/a.txt").stdout == "héllo\n"
        ex = sb.run_code("print(1)")  # no Python in the image: a clear failure, not a broken agent
        assert not ex.success and "python3" in str(ex.error) + ex.stderr, ex
        assert sb.commands.run("echo still-here; cat /srv/run.txt").stdout == "still-here\nbuilt-by-run\n"
        # sudo (a script of the agent's interpreter) runs on the runtime through the kit's shim and /bin/sh.
        su = sb.commands.run("/usr/local/bin/sudo sh -c 'echo as-root; id -u'")  # the image's PATH is /bin
        assert su.stdout == "as-root\n0\n", su


def test_the_e2b_sdk_runs_commands_and_files(server, template, monkeypatch):
    from e2b import Sandbox

    for k, v in server.client_env.items():
        if k.startswith("E2B_"):
            monkeypatch.setenv(k, v)
    sbx = Sandbox.create(template, timeout=120)
    try:
        out = sbx.commands.run("sh -c 'echo hi; id -u; ls /'")  # E2B sends `/bin/bash -l -c ...`
        lines = out.stdout.split("\n")
        assert lines[:2] == ["hi", "0"] and "bin" in lines, out.stdout
        assert not [leak for leak in LEAKS if leak in sbx.commands.run("env").stdout]
        sbx.files.write("/tmp/e2b.txt", "from e2b\n")
        assert sbx.files.read("/tmp/e2b.txt") == "from e2b\n"
        assert sbx.commands.run("cat /tmp/e2b.txt").stdout == "from e2b\n"
    finally:
        sbx.kill()
