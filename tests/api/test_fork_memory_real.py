"""A fork takes the parent's running processes and memory (docs/snapshots.md), as E2B's `fork()` says: each child
goes on from the instant of the fork, in its own sandbox (uid range, host name, cgroups, network)."""
from __future__ import annotations

import os

import pytest

from support.server import running_server

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from running_server(tmp_path_factory, "crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES)


def _uid_base(sbx) -> str:
    return sbx.commands.run("cat /proc/self/uid_map").stdout.split()[1]


def test_forks_go_on_from_the_parents_processes_and_memory(server):
    from e2b_code_interpreter import Sandbox

    with server.e2b_env():
        parent = Sandbox.create(timeout=300)
        kids = []
        try:
            assert parent.run_code("x = 41").error is None
            parent.commands.run("sleep 8888", background=True)
            parent.files.write("/home/user/note.txt", "from the parent")
            kids = parent.fork(count=2, timeout=120)
            assert all(isinstance(k, Sandbox) for k in kids), kids
            for kid in kids:
                assert kid.run_code("x + 1").text == "42"  # the kernel went on, with its variables
                assert kid.commands.run("pgrep -fx 'sleep 8888'").stdout.split()  # and the background process
                assert kid.files.read("/home/user/note.txt") == "from the parent"
                assert kid.commands.run("hostname").stdout.strip() != parent.commands.run("hostname").stdout.strip()
                assert _uid_base(kid) != _uid_base(parent)  # its own host uid range
            kids[0].run_code("x = 100")
            assert parent.run_code("x").text == "41" and kids[1].run_code("x").text == "41"  # three separate memories
            assert parent.commands.run("pgrep -fx 'sleep 8888'").stdout.split()  # the parent runs on
        finally:
            for s in [parent, *[k for k in kids if isinstance(k, Sandbox)]]:
                try:
                    s.kill()
                except Exception:
                    pass


def test_a_snapshot_keeps_processes_and_memory_for_every_sandbox_made_from_it(server):
    """E2B's `create_snapshot()` ("full", the default): sandboxes made from it go on from the source's processes
    and memory, even after the source is gone, each with its own id in its environment; "filesystem" keeps files
    only; deleting the snapshot deletes its images."""
    from e2b_code_interpreter import Sandbox

    made = []
    with server.e2b_env():
        try:
            src = Sandbox.create(timeout=300)
            made.append(src)
            assert src.run_code("y = 6 * 7").error is None
            src.commands.run("sleep 7777", background=True)
            full = src.create_snapshot()
            files_only = src.create_snapshot(mode="filesystem")
            memory = server.data_dir / "snapshots" / full.snapshot_id / "images"
            assert (memory / "pages-1.img").exists()
            assert not (server.data_dir / "snapshots" / files_only.snapshot_id).exists()
            src.kill()
            for _ in range(2):
                sbx = Sandbox.create(full.snapshot_id, timeout=120, envs={"FROM": "child"})
                made.append(sbx)
                assert sbx.run_code("y").text == "42"
                assert sbx.commands.run("pgrep -fx 'sleep 7777'").stdout.split()
                env = sbx.commands.run("echo $SANDBOXD_SANDBOX_ID $FROM").stdout.split()
                assert env == [sbx.sandbox_id, "child"]
            fresh = Sandbox.create(files_only.snapshot_id, timeout=120)
            made.append(fresh)
            assert fresh.run_code("y").error is not None  # booted: a new kernel
            assert fresh.commands.run("pgrep -fx 'sleep 7777' || echo none").stdout.strip() == "none"
            kinds = [e.get("snapshot") for e in _events(server, src.sandbox_id, "checkpointed")]
            assert {"snapshot_id": full.snapshot_id, "memory": True} in kinds
            assert {"snapshot_id": files_only.snapshot_id, "memory": False} in kinds
            for s in made[1:]:
                s.kill()
            assert Sandbox.delete_snapshot(full.snapshot_id)
            assert not memory.parent.exists()
        finally:
            for s in made:
                try:
                    s.kill()
                except Exception:
                    pass


def _events(server, sid: str, kind: str) -> list[dict]:
    with server.client() as c:
        rows = c.get(f"/events/sandboxes/{sid}", params={"limit": 100, "orderAsc": "true"}).json()
    return [e["eventData"] for e in rows if e["type"].endswith(kind)]
