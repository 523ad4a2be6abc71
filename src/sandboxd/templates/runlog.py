"""Streaming a RUN step's output while it runs.

The backend's exec returns output only at the end, and a RUN (apt, pip, npm) can take minutes. So the step
writes its output to a file at the root of the build sandbox, and the host follows that file in the
sandbox's overlay upper dir. The sandbox controls that file: it is opened without following symlinks and
read only when it is a regular file, so a RUN cannot point the host at any other file.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

LOG_NAME = ".sandboxd-build.log"
IN_SANDBOX = "/" + LOG_NAME
MAX_BYTES = 32 * 1024 * 1024  # per step: a runaway RUN must not flood the build log


def wrap(cmd: str) -> list[str]:
    """argv for a RUN: everything the command prints goes to the followed file."""
    return ["/bin/sh", "-c", f"exec >>{IN_SANDBOX} 2>&1\n{cmd}"]


PREPARE = ["/bin/sh", "-c", f": > {IN_SANDBOX} && chmod 666 {IN_SANDBOX}"]


class LogFollower:
    def __init__(self, path: Path, log: Callable[[str], None]):
        self.path = path
        self.log = log
        self.offset = 0
        self.partial = b""
        self.recent: list[str] = []

    def _emit(self, line: str) -> None:
        self.log(line)
        self.recent = (self.recent + [line])[-60:]

    def poll(self) -> None:
        if self.offset >= MAX_BYTES:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # not there (yet), or a symlink
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            os.lseek(fd, self.offset, os.SEEK_SET)
            data = os.read(fd, MAX_BYTES - self.offset)
        finally:
            os.close(fd)
        if not data:
            return
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self._emit(raw.decode(errors="replace").rstrip("\r"))
        if self.offset >= MAX_BYTES:
            self._emit(f"(output truncated at {MAX_BYTES} bytes)")

    def finish(self) -> None:
        self.poll()
        if self.partial:
            self._emit(self.partial.decode(errors="replace"))
            self.partial = b""

    @property
    def tail(self) -> str:
        return "\n".join(self.recent)[-4000:]
