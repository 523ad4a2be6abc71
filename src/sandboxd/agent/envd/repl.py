"""A stateful context of the E2B code interpreter run by a process of its own language (jsrepl.py: Node,
javarepl.py: a JVM): one process per context, cells sent to it one after another, their events read back.

The process evaluates each cell in one lasting scope, so variables, functions and imports live on between
cells. What the user's code prints comes back as events of the cell that printed it (the process captures
its own output); what child processes write to the inherited stdout/stderr is read here.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from typing import AsyncIterator

GRACE = 2.0  # seconds an interrupted cell has to stop before its context is restarted
KEEPALIVE = 1.0


class Repl:
    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.current: int | None = None  # the cell whose events are wanted
        self._running: int | None = None  # the cell the process runs (an interrupted one may still run)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.idle = asyncio.Event()
        self.idle.set()
        self._ids = itertools.count(1)
        self.ended = False  # the channel closed: the process is gone or going
        self._tasks: list[asyncio.Task] = []

    def alive(self) -> bool:
        return self._live() is not None

    def _live(self) -> asyncio.subprocess.Process | None:
        """The process while the context can take cells."""
        proc = self.proc
        return proc if proc is not None and proc.returncode is None and not self.ended else None

    async def start(self, env: dict[str, str], cwd: str, **options) -> None:
        proc, reader, self.writer = await self._spawn(env, cwd, **options)
        self.proc = proc
        assert proc.stdout is not None and proc.stderr is not None  # started with pipes for both
        self._tasks = [asyncio.create_task(self._events(reader)),
                       asyncio.create_task(self._pump(proc.stdout, "stdout")),
                       asyncio.create_task(self._pump(proc.stderr, "stderr"))]

    async def _spawn(self, env: dict[str, str], cwd: str, **options
                     ) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.StreamWriter]:
        """The language's process, and the channel to it: events in, cells out."""
        raise NotImplementedError

    def _request(self, cell: int, code: str, env: dict[str, str]) -> bytes:
        """One cell as the process reads it."""
        return json.dumps({"cell": cell, "code": code, "env": env}).encode() + b"\n"

    async def _events(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            event = json.loads(line)
            if event["type"] == "end" and event.get("cell") == self._running:
                self.idle.set()
            if event.pop("cell", None) == self.current:
                self.queue.put_nowait(event)
        self.ended = True
        self.idle.set()
        self.queue.put_nowait({"type": "died"})

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        while chunk := await stream.read(65536):
            if self.current is not None:
                self.queue.put_nowait({"type": name, "text": chunk.decode("utf-8", "replace")})

    async def settle(self) -> bool:
        """Whether the context can take a cell: an interrupted cell gets GRACE to stop, then the process
        goes."""
        if not self.idle.is_set():
            try:
                await asyncio.wait_for(self.idle.wait(), GRACE)
            except asyncio.TimeoutError:
                await self.shutdown()
        return self.alive()

    async def execute(self, code: str, env: dict[str, str]) -> AsyncIterator[dict]:
        """The cell's events up to its end: stdout, stderr, display (a MIME bundle), error, keepalive while
        nothing happens; `died` if the process ended under it."""
        assert self.writer is not None  # start() opened it
        cell = next(self._ids)
        self.current, self._running, self.queue = cell, cell, asyncio.Queue()
        self.idle.clear()
        self.writer.write(self._request(cell, code, env))
        while True:
            try:
                event = await asyncio.wait_for(self.queue.get(), KEEPALIVE)
            except asyncio.TimeoutError:
                yield {"type": "keepalive"}  # writing it is how a client that went away is noticed
                continue
            if event["type"] == "end":
                return
            yield event
            if event["type"] == "died":
                return

    def interrupt(self) -> None:
        """Break the running cell (SIGINT stops synchronous code); a cell still running GRACE later, such
        as one awaiting forever, costs the context its process (`settle`), which the next cell restarts."""
        self.current = None
        proc = self._live()
        if proc is not None and not self.idle.is_set():
            os.kill(proc.pid, signal.SIGINT)

    async def shutdown(self) -> None:
        proc = self._live()
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
        for t in self._tasks:
            t.cancel()
        if self.writer is not None:
            self.writer.close()
        self.idle.set()
