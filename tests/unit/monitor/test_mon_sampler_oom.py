"""The sampler's OOM watch: a sandbox whose init was OOM-killed is ended (reason oom) once, one whose kill
spared init lives on, and a runtime that is slow to answer for one sandbox never stops the others' metrics
(CI once saw a new sandbox get no sample for 30 s right after an OOM-killed one)."""
from __future__ import annotations

import asyncio

from sandboxd.monitor import sampler as sampler_mod
from sandboxd.monitor.sampler import Sampler
from sandboxd.monitor.series import SeriesStore
from sandboxd.runtime.base import RuntimeState, Stats


class _Backend:
    def __init__(self) -> None:
        self.ooms: dict[str, int] = {}
        self.states: dict[str, RuntimeState] = {}
        self.hang: set[str] = set()  # state() of these never answers
        self.cpu = 0

    async def stats(self, sid: str) -> Stats:
        self.cpu += 10_000_000
        return Stats(cpu_usage_ns=self.cpu, cpu_quota_cores=1.0, memory_used_bytes=1 << 20,
                     memory_limit_bytes=1 << 30, oom_kills=self.ooms.get(sid, 0))

    async def state(self, sid: str) -> RuntimeState:
        if sid in self.hang:
            await asyncio.Event().wait()
        return self.states.get(sid, RuntimeState.RUNNING)


def _sampler(store, backend, ids, ended, release=None):
    async def on_oom(sid: str) -> None:  # as the lifecycle's kill: slow, then the sandbox is no longer running
        ended.append(sid)
        if release is not None:
            await release.wait()
        ids.remove(sid)

    return Sampler(store, backend, SeriesStore(store, retention_seconds=3600), interval=0.5, on_oom=on_oom,
                   list_running=lambda: list(ids))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_hung_state_check_does_not_stop_other_sandboxes_metrics(store, monkeypatch):
    monkeypatch.setattr(sampler_mod, "STATE_TIMEOUT_SECONDS", 0.2)
    backend, ended = _Backend(), []
    s = _sampler(store, backend, ["sbdying", "sbnew"], ended)
    await s.tick()
    backend.ooms["sbdying"] = 1
    backend.hang.add("sbdying")
    for _ in range(3):
        got = await asyncio.wait_for(s.tick(), 1.0)  # the tick never waits for the hung runtime
        assert "sbnew" in {x.sandbox_id for x in got}
    assert s.latest["sbnew"].mem_used == 1 << 20
    await asyncio.sleep(0.3)  # the check timed out: no answer is not death
    assert ended == [] and not s._checking
    backend.hang.clear()
    backend.states["sbdying"] = RuntimeState.STOPPED
    await s.tick()
    await _settle()
    assert ended == ["sbdying"]


async def test_an_oom_that_took_init_ends_the_sandbox_once(store):
    backend, ended, release, ids = _Backend(), [], asyncio.Event(), ["sba", "sbb"]
    s = _sampler(store, backend, ids, ended, release)
    await s.tick()
    backend.ooms["sba"] = backend.ooms["sbb"] = 1
    backend.states["sba"] = RuntimeState.STOPPED  # init died; sbb's kill spared its init
    for _ in range(3):  # the end takes a while: it is asked for once
        await s.tick()
        await _settle()
    assert ended == ["sba"]
    release.set()
    await _settle()
    await s.tick()
    assert ids == ["sbb"] and ended == ["sba"]
    assert "sbb" in s.latest and "sba" not in s.latest


async def test_close_cancels_the_checks_still_running(store):
    backend, ended = _Backend(), []
    s = _sampler(store, backend, ["sbhung"], ended)
    await s.tick()
    backend.ooms["sbhung"] = 1
    backend.hang.add("sbhung")
    await s.tick()
    await _settle()
    assert s._tasks and s._checking == {"sbhung"}
    await s.close()
    assert not s._tasks and not s._checking and ended == []
