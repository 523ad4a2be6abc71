"""_spawn_with_fd3 (oci/cli.py): posix_spawnp through libc with the GIL released; the child gets stdin from
/dev/null, `log` as stdout and stderr, and `fd` as its fd 3; a missing binary is an OSError."""
from __future__ import annotations

import os

import pytest

from sandboxd.runtime import reaper
from sandboxd.runtime.oci.cli import _spawn_with_fd3


def test_child_gets_devnull_log_and_fd3(tmp_path):
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    r, w = os.pipe()
    try:
        script = "readlink /proc/self/fd/0; echo out; echo err >&2; echo via-fd3 >&3"
        pid = _spawn_with_fd3(["sh", "-c", script], w, log)
        assert pid in reaper.spawned  # registered before any reap could see it
        reaper.spawned.discard(pid)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"via-fd3\n"
        assert (tmp_path / "log").read_text() == "/dev/null\nout\nerr\n"
    finally:
        os.close(log)
        os.close(r)
        if w >= 0:
            os.close(w)


def test_missing_binary_is_an_oserror(tmp_path):
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as exc:
            _spawn_with_fd3([str(tmp_path / "no-such-runtime")], log, log)
        assert exc.value.errno == 2
    finally:
        os.close(log)
