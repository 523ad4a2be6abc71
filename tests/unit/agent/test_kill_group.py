"""kill_group never signals a process group whose leader only shares the id of a command already reaped."""
from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace

from sandboxd.agent.processes import kill_group


def _leader() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "30"], start_new_session=True)  # its pid is its process group's id


def test_a_reaped_commands_id_held_by_another_session_is_spared():
    other = _leader()
    try:
        # a command that ended and was reaped, whose pid the kernel has since handed to `other`
        kill_group(SimpleNamespace(pid=other.pid, returncode=0))
        time.sleep(0.2)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_running_commands_group_is_killed():
    running = _leader()
    kill_group(SimpleNamespace(pid=running.pid, returncode=None))
    assert running.wait(5) == -9
