"""The agent's services, shared by every route module (ours, envd's, desktop's) without HTTP.

Each service is built (and its module imported) on first use: the agent must answer `/health` as soon as
possible after exec, and a sandbox that only ever runs commands never needs the kernel or file machinery.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Awaitable, Callable

from .env import EnvStore
from .sysinfo import CpuSampler


class Activity:
    """Executions and commands in flight and run so far (for /metrics). Apart from the executor, so that a
    command does not build the kernel machinery."""

    def __init__(self) -> None:
        self.active = 0
        self.total = 0

    @contextmanager
    def running(self):
        self.active += 1
        self.total += 1
        try:
            yield
        finally:
            self.active -= 1


class Services:
    def __init__(self, workspace: str | None = None, env: dict[str, str] | None = None):
        self.workspace = workspace or os.environ.get("SANDBOXD_AGENT_WORKSPACE", "/workspace")
        self.started = time.time()
        self.env = EnvStore(env)
        self.cpu = CpuSampler()  # eager: its first reading is measured against agent start
        self.activity = Activity()
        self.envd = None  # E2B's envd services, attached by sandboxd.agent.envd.register
        self.channel: Any = None  # the host's socket (agent/park.py), when the agent serves on one
        # Async callables run at shutdown by plug-ins that own processes (desktop: Xvnc, ffmpeg).
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    @cached_property
    def files(self):
        from .files import Files

        return Files(self.workspace)

    @cached_property
    def processes(self):
        from .processes import Processes

        return Processes()

    @cached_property
    def kernels(self):
        from .kernel import KernelManager

        return KernelManager()

    @cached_property
    def executor(self):
        from .execution import Executor

        return Executor(self.env, self.kernels, self.processes, self.workspace, self.activity)

    async def shutdown(self) -> None:
        """End every process the agent started; one failing part never keeps the others running."""
        built = self.__dict__  # only services that were ever used can own processes
        parts = [s.shutdown for s in (built.get("processes"), built.get("kernels")) if s is not None]
        if self.envd is not None:
            parts += [self.envd.interpreter.shutdown]
        parts += self.on_shutdown
        for part in parts:
            try:
                await part()
            except Exception:
                import logging

                logging.getLogger(__name__).exception("agent shutdown: %r failed", part)
