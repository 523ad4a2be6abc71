"""The agent's services, shared by every route module (ours, envd's, desktop's) without HTTP."""
from __future__ import annotations

import os
import time

from .env import EnvStore
from .execution import Executor
from .files import Files
from .kernel import KernelManager
from .processes import Jobs
from .sysinfo import CpuSampler


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

    async def shutdown(self) -> None:
        await self.jobs.shutdown()
        await self.kernels.shutdown()
