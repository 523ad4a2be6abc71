"""Streaming a RUN step's output while it runs.

The backend's exec returns output only at the end, and a RUN (apt, pip, npm) can take minutes. So the step
writes its output to a file at the root of the build sandbox, and the host follows that file in the
sandbox's overlay upper dir. The sandbox controls that file: it is opened without following symlinks and
read only when it is a regular file, so a RUN cannot point the host at any other file. Async code reads it
in a worker thread (`apoll`), a bounded chunk per poll, and emits the lines on the event loop.
"""
from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Callable

LOG_NAME = ".sandboxd-build.log"
IN_SANDBOX = "/" + LOG_NAME
MAX_BYTES = 32 * 1024 * 1024  # per step: a runaway RUN must not flood the build log
CHUNK = 1024 * 1024  # per poll: one read never holds a worker thread long


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

    def read_new(self) -> bytes:
        """What was appended since the last read (at most CHUNK bytes); blocking I/O, call from a thread."""
        if self.offset >= MAX_BYTES:
            return b""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return b""  # not there (yet), or a symlink
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return b""
            return os.pread(fd, min(CHUNK, MAX_BYTES - self.offset), self.offset)
        except OSError:
            return b""
        finally:
            os.close(fd)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            self._emit(raw.decode(errors="replace").rstrip("\r"))
        if self.offset >= MAX_BYTES:
            self._emit(f"(output truncated at {MAX_BYTES} bytes)")

    def poll(self) -> None:
        self.feed(self.read_new())

    async def apoll(self) -> None:
        self.feed(await asyncio.to_thread(self.read_new))

    def finish(self) -> None:
        while data := self.read_new():
            self.feed(data)
        self._flush()

    async def afinish(self) -> None:
        while data := await asyncio.to_thread(self.read_new):
            self.feed(data)
        self._flush()

    def _flush(self) -> None:
        if self.partial:
            self._emit(self.partial.decode(errors="replace"))
            self.partial = b""

    @property
    def tail(self) -> str:
        return "\n".join(self.recent)[-4000:]
