"""A stand-in for the sandboxd daemon, run as a subprocess by test_recover.py and then SIGKILLed.

argv: data_dir. Creates sandbox <prefix>-run (running) and <prefix>-paused (paused), prints "READY",
then starts creating <prefix>-half, held at its agent's health check until the kill.
"""
from __future__ import annotations

import asyncio
import sys

from sandboxd.config import Settings
from sandboxd.runtime import get_backend
from sandboxd.runtime.base import Resources, SandboxSpec
from sandboxd.templates.store import TemplateStore


async def main(data_dir: str, prefix: str) -> None:
    settings = Settings(data_dir=data_dir, backend="crun")
    backend = get_backend(settings)
    image = TemplateStore(settings).get("base")
    res = Resources(memory_mb=256, disk_mb=128, pids=128)
    await backend.create(SandboxSpec(id=f"{prefix}-run", image=image, resources=res, internet_access=True))
    await backend.exec(f"{prefix}-run", ["sh", "-c", "echo before-crash > /workspace/mark"])
    await backend.create(SandboxSpec(id=f"{prefix}-paused", image=image, resources=res))
    await backend.pause(f"{prefix}-paused")
    # The third create never gets past its agent's health check, so the kill always finds it half done
    # (its container running, its record "creating"): a create can otherwise finish in under 50 ms.
    healthy = backend._wait_healthy

    async def hang(rec, log_path):
        if rec.id.endswith("-half"):
            await asyncio.sleep(3600)
        await healthy(rec, log_path)

    backend._wait_healthy = hang
    print("READY", flush=True)
    await backend.create(SandboxSpec(id=f"{prefix}-half", image=image, resources=res, internet_access=True))
    print("HALF-DONE", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
