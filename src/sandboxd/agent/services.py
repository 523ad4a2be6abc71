"""The agent's services, shared by every route module (ours, envd's, desktop's) without HTTP."""
from __future__ import annotations

import logging
import os
import time
from typing import Awaitable, Callable

from .env import EnvStore
from .execution import Executor
from .files import Files
from .kernel import KernelManager
from .processes import Jobs
from .sysinfo import CpuSampler

log = logging.getLogger(__name__)


class Services:
    def __init__(self, workspace: str | None = None, env: dict[str, str] | None = None):
        self.workspace = workspace or os.environ.get("SANDBOXD_AGENT_WORKSPACE", "/workspace")
        self.started = time.time()
        self.env = EnvStore(env)
        self.files = Files(self.workspace)
        self.jobs = Jobs()
        self.kernels = KernelManager()
        self.executor = Executor(self.env, self.kernels, self.jobs, self.workspace)
        self.cpu = CpuSampler()
        self.envd = None  # E2B's envd services, attached by sandboxd.agent.envd.register
        # Async callables run at shutdown by plug-ins that own processes (desktop: Xvnc, ffmpeg).
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def shutdown(self) -> None:
        """End every process the agent started; one failing part never keeps the others running."""
        parts = [self.jobs.shutdown, self.kernels.shutdown]
        if self.envd is not None:
            parts += [self.envd.processes.shutdown, self.envd.interpreter.shutdown]
        parts += self.on_shutdown
        for part in parts:
            try:
                await part()
            except Exception:
                log.exception("agent shutdown: %r failed", part)
