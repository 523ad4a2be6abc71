"""uncancellable: a cancel waits for the work (a worker thread, a runtime call) before the caller's cleanup runs."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sandboxd.runtime.uncancellable import uncancellable


def test_a_cancel_waits_for_the_thread_then_propagates():
    log: list[str] = []
    started, gate = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        gate.wait(5)
        time.sleep(0.05)
        log.append("thread done")

    async def caller() -> None:
        try:
            await uncancellable(asyncio.to_thread(work))
        finally:
            log.append("cleanup")  # what create's teardown does

    async def main() -> None:
        task = asyncio.create_task(caller())
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.05)
        assert log == []  # plain to_thread: ["cleanup"] here, with the thread still working
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert log == ["thread done", "cleanup"]


def test_results_and_errors_pass_through():
    async def boom() -> None:
        raise ValueError("x")

    async def main() -> None:
        assert await uncancellable(asyncio.to_thread(lambda: 7)) == 7
        with pytest.raises(ValueError):
            await uncancellable(boom())

    asyncio.run(main())


def test_a_second_cancel_gives_up_the_wait():
    gate = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(uncancellable(asyncio.to_thread(gate.wait, 5)))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()

    asyncio.run(main())
