"""Work that a cancel must not cut short: the caller's cleanup would run under it."""
from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")


async def uncancellable(work: Awaitable[T]) -> T:
    """Await `work`; a cancel waits for it to finish before it propagates. A cancelled `asyncio.to_thread`
    returns at once while its thread runs on: a create cancelled (the pool's fill at shutdown) while its
    thread attached the loop disk or mounted the root tore down under that thread, and a mount landing after
    the teardown's unmount leaks the mount and its loop device; a cancelled `crun run` left its pid marked
    as ours (never reaped) and its fd 3 closed under the spawn. A second cancel while waiting gives up the
    wait."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the caller reports the cancel, not what the work raised
        raise
