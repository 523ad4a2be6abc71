"""Reads every running sandbox's counters through the backend at a fixed interval.

CPU % is the share of the sandbox's own quota used since the previous reading, so the first reading
of a sandbox only primes the counter (E2B too returns no metrics for the first second or so).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine

from sqlalchemy import select

from sandboxd.core.models import RUNNING
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import SandboxRow
from sandboxd.monitor.series import Sample, SeriesStore
from sandboxd.runtime.base import Backend, RuntimeState, Stats

log = logging.getLogger(__name__)
COMPACT_EVERY_SECONDS = 60.0
OOM_WATCH_SECONDS = 15.0  # how long after an OOM kill the sandbox's state is re-checked every tick
STATE_TIMEOUT_SECONDS = 10.0  # one such check's wait for the runtime's answer


@dataclass
class _Prev:
    wall: float
    cpu_ns: int
    oom_kills: int


def cpu_percent(prev_ns: int, now_ns: int, seconds: float, quota_cores: float) -> float:
    if seconds <= 0 or quota_cores <= 0:
        return 0.0
    pct = (now_ns - prev_ns) / (seconds * 1e9 * quota_cores) * 100.0
    return min(100.0, max(0.0, pct))  # counters can jump (throttling windows); keep within the quota


class Sampler:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        series: SeriesStore,
        *,
        interval: float,
        on_oom: Callable[[str], Awaitable[None]] | None = None,
        list_running: Callable[[], list[str]] | None = None,
    ):
        self.store = store
        self.backend = backend
        self.series = series
        self.interval = interval
        self.on_oom = on_oom
        self._list_running = list_running or self._running_from_store
        self._prev: dict[str, _Prev] = {}
        self._suspects: dict[str, float] = {}  # sandbox id -> until when to watch it after an OOM kill
        self._ending: set[str] = set()
        self._checking: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self.latest: dict[str, Sample] = {}
        self.lag_seconds = 0.0  # how late the last tick started compared with its schedule
        self.last_duration = 0.0
        self.ticks = 0
        self._tick_event = asyncio.Event()
        self._last_compact = 0.0

    def _running_from_store(self) -> list[str]:
        with self.store.tx() as s:
            return list(s.scalars(select(SandboxRow.id).where(SandboxRow.status == RUNNING)))

    async def run(self) -> None:
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
                now = time.monotonic()
            self.lag_seconds = max(0.0, now - next_at)
            try:
                await self.tick()
            except Exception:  # a bad tick must not end monitoring
                log.exception("sampler tick failed")
            self.last_duration = time.monotonic() - now
            next_at += self.interval
            if next_at < time.monotonic():  # fell behind: skip missed ticks instead of bursting
                next_at = time.monotonic() + self.interval

    async def tick(self) -> list[Sample]:
        ids = await asyncio.to_thread(self._list_running)
        results = await self._read(ids)
        wall = time.time()
        samples: list[Sample] = []
        # Replaced, never mutated, so threads (Prometheus scrapes, SSE) can read it without a lock.
        live = set(ids)
        latest = {k: v for k, v in self.latest.items() if k in live}
        for sandbox_id, st in zip(ids, results):
            if sandbox_id in self._ending:
                continue
            if isinstance(st, BaseException):
                self._check(sandbox_id, None)
                continue
            prev = self._prev.get(sandbox_id)
            self._prev[sandbox_id] = _Prev(wall, st.cpu_usage_ns, st.oom_kills)
            if st.oom_kills > (prev.oom_kills if prev else 0):
                # The runtime may still say "running" for a moment after the kernel killed init: keep
                # checking this sandbox's state for a while, not just on the tick that saw the kill.
                self._suspects[sandbox_id] = wall + OOM_WATCH_SECONDS
            if sandbox_id in self._suspects:
                self._check(sandbox_id, st)
                if self._suspects.get(sandbox_id, 0) < wall:
                    self._suspects.pop(sandbox_id, None)
            if prev is None:
                continue
            sample = to_sample(sandbox_id, wall, st, cpu_percent(prev.cpu_ns, st.cpu_usage_ns, wall - prev.wall, st.cpu_quota_cores))
            samples.append(sample)
            latest[sandbox_id] = sample
        for gone in set(self._prev) - live:
            self._prev.pop(gone, None)
            self._suspects.pop(gone, None)
        self.latest = {k: v for k, v in latest.items() if k in self._prev}
        if samples:
            await asyncio.to_thread(self.series.write, samples)
        if wall - self._last_compact >= COMPACT_EVERY_SECONDS:
            self._last_compact = wall
            await asyncio.to_thread(self.series.compact, wall)
        self.ticks += 1
        self._tick_event.set()
        self._tick_event = asyncio.Event()
        return samples

    async def _read(self, ids: list[str]) -> list[Stats | BaseException]:
        # A backend may offer `stats_many(ids)`: one batched read per tick instead of one coroutine (and its
        # thread hops) per sandbox, which is most of the sampler's cost at 100 sandboxes (bench/sampler.py).
        many = getattr(self.backend, "stats_many", None)
        if callable(many) and ids:
            try:
                got = await many(ids)
                return [got.get(i, LookupError(i)) for i in ids]
            except Exception as exc:
                log.warning("stats_many failed, reading one by one: %s", exc)
        return await asyncio.gather(*(self.backend.stats(i) for i in ids), return_exceptions=True)

    async def wait_tick(self) -> None:
        """Wait for the next tick (SSE metric streams push on each)."""
        await self._tick_event.wait()

    def _check(self, sandbox_id: str, st: Stats | None) -> None:
        """Whether an OOM kill took the sandbox's init down is asked on a task of its own: a backend may
        answer through a runtime call (the OCI backend did, `crun state`), which can be slow, and every other
        sandbox's metrics would stop while the tick waited for it."""
        prev = self._prev.get(sandbox_id)
        ooms = st.oom_kills if st is not None else (prev.oom_kills if prev else 0)
        if ooms <= 0 or self.on_oom is None or sandbox_id in self._checking:
            return
        self._checking.add(sandbox_id)
        self._spawn(self._check_dead(sandbox_id))

    async def _check_dead(self, sandbox_id: str) -> None:
        """An OOM kill that took the sandbox's init down ends the sandbox, with reason oom."""
        try:
            try:
                state = await asyncio.wait_for(self.backend.state(sandbox_id), STATE_TIMEOUT_SECONDS)
            except asyncio.TimeoutError:
                log.warning("state of OOM-killed sandbox %s took over %.0f s", sandbox_id, STATE_TIMEOUT_SECONDS)
                return  # no answer is not death: the next tick asks again while it is a suspect
            except Exception:
                state = None
            if state not in (None, RuntimeState.STOPPED) or sandbox_id in self._ending:
                return
            self._prev.pop(sandbox_id, None)
            self._suspects.pop(sandbox_id, None)
            self._ending.add(sandbox_id)  # ending takes a while (destroy): never ask twice
            self._spawn(self._end(sandbox_id))
        finally:
            self._checking.discard(sandbox_id)

    async def close(self) -> None:
        """Cancel the state checks and OOM ends still running (the service is stopping)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end(self, sandbox_id: str) -> None:
        try:
            if self.on_oom is not None:  # always set when an end is spawned
                await self.on_oom(sandbox_id)
        except Exception:
            log.exception("could not end OOM-killed sandbox %s", sandbox_id)
        finally:
            self._ending.discard(sandbox_id)


def to_sample(sandbox_id: str, wall: float, st: Stats, cpu_pct: float) -> Sample:
    return Sample(
        sandbox_id=sandbox_id, ts=wall, cpu_count=st.cpu_quota_cores, cpu_pct=cpu_pct,
        mem_used=st.memory_used_bytes, mem_total=st.memory_limit_bytes, mem_cache=st.memory_cache_bytes,
        disk_used=st.disk_used_bytes, disk_total=st.disk_limit_bytes, net_rx=st.net_rx_bytes, net_tx=st.net_tx_bytes,
    )
