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
