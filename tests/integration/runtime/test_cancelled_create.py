"""A create cancelled half-way (the pool's fill when the daemon stops) releases everything, and only once the
work it was waiting for has finished: a teardown racing a mount leaks the mount and its loop device."""
from __future__ import annotations

import asyncio
import threading

import pytest

from support.runtime import leftovers, spec
from sandboxd.runtime import reaper
from sandboxd.runtime.oci import cli

pytestmark = pytest.mark.real


def _cancel_while_held(sb, box, hold: threading.Event, held: threading.Event, during) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(sb.backend.create(box))
        assert await asyncio.to_thread(held.wait, 30)
        task.cancel()
        await asyncio.sleep(0.2)
        during()
        hold.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    sb.loop.run_until_complete(scenario())


def test_a_create_cancelled_while_its_disk_is_prepared(rt_env, monkeypatch):
    settings, sb, image = rt_env
    box = spec(image, "cancelprep")
    hold, held = threading.Event(), threading.Event()
    real = sb.backend._prepare_files

    def slow(*args):
        held.set()
        hold.wait(30)
        real(*args)  # copies the disk image, attaches the loop device, mounts disk and root

    monkeypatch.setattr(sb.backend, "_prepare_files", slow)
    d = sb.backend.dir(box.id)
    # The teardown waits for the thread: it has not removed the sandbox's directory under it.
    _cancel_while_held(sb, box, hold, held, lambda: (d / "state.json").exists() or pytest.fail("torn down early"))
    assert leftovers(settings, box.id) == []


def test_a_create_cancelled_while_the_runtime_starts_it(rt_env, monkeypatch):
    settings, sb, image = rt_env
    box = spec(image, "cancelrun")
    hold, held = threading.Event(), threading.Event()
    pids: list[int] = []
    real = cli._spawn_with_fd3

    def slow(*args):
        held.set()
        hold.wait(30)
        pids.append(real(*args))
        return pids[-1]

    monkeypatch.setattr(cli, "_spawn_with_fd3", slow)
    _cancel_while_held(sb, box, hold, held, lambda: None)
    assert pids and pids[0] not in reaper.spawned  # waited for and collected, not left to the reaper for good
    assert leftovers(settings, box.id) == []
    assert sb.state(box.id) is None
