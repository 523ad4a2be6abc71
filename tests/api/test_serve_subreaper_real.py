"""`sandboxd serve` with crun is the child subreaper of its detached containers (marked real)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from support.server import CPServer

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
pytestmark = pytest.mark.real


def ppid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError("no PPid")


def zombie_children(pid: int) -> list[str]:
    """pid's children that exited and were never reaped, as `pid comm`."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += (task / "children").read_text().split()
        except OSError:
            continue
    out = []
    for k in kids:
        try:
            stat = Path(f"/proc/{k}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] == "Z":
            out.append(f"{k} {Path(f'/proc/{k}/comm').read_text().strip()}")
    return out


def test_sandbox_init_is_adopted_by_serve():
    data = Path(tempfile.mkdtemp(prefix="test-reaper-", dir="/tmp"))
    data.chmod(0o755)
    srv = CPServer(data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES).start()
    try:
        with srv.client() as c:
            sb = c.post("/v1/sandboxes", json={"template_name": "base"}).json()
            init = int((data / "sandboxes" / sb["id"] / "init.pid").read_text())
            # `crun run -d` double-forks: the init's parent is the nearest subreaper, which must be serve.
            assert ppid(init) == srv.proc.pid
            assert c.delete(f"/v1/sandboxes/{sb['id']}").status_code == 200
            ended = [(init, data / "sandboxes" / sb["id"])]
            # The runtime's own orphans (its double fork; named after the sealed copy's fd) are reaped too:
            # each one left would hold a pid for the daemon's life (one per create, ~5k to a TasksMax).
            for _ in range(3):
                other = c.post("/v1/sandboxes", json={"template_name": "base"}).json()
                d = data / "sandboxes" / other["id"]
                ended.append((int((d / "init.pid").read_text()), d))
                assert c.delete(f"/v1/sandboxes/{other['id']}").status_code == 200
        # A kill returns once the processes are SIGKILLed; the release (and the reaping) follow at once. Wait
        # for every sandbox's own end first: a scan for zombies alone could run while the last init is still
        # exiting (not yet a zombie), pass, and the next scan catch it the moment it became one.
        deadline = time.monotonic() + 10
        for pid, left in ended:
            while (Path(f"/proc/{pid}").exists() or left.exists()) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not Path(f"/proc/{pid}").exists()  # reaped, not left a zombie
            assert not left.exists()  # and its files released
        while zombie_children(srv.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert zombie_children(srv.proc.pid) == []
    finally:
        srv.close()
        shutil.rmtree(data, ignore_errors=True)
