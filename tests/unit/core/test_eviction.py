"""core/eviction.py's choices: who goes to disk first, and when it stops."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

from sandboxd.core import eviction
from sandboxd.core.routes import RouteTable, SandboxRoute


class FakeLifecycle:
    def __init__(self, used: dict[str, float], busy=(), status=None):
        self.settings = SimpleNamespace(evict_below_free_mb=1000, evict_idle_seconds=10.0)
        self.backend = SimpleNamespace(memory_snapshots=lambda: True)
        self.pool = SimpleNamespace(owns=lambda sid: sid == "pooled")
        self.routes = RouteTable()
        for sid, at in used.items():
            self.routes.put(sid, SandboxRoute(Path(f"/x/{sid}"), (status or {}).get(sid, "running"), 0, True, at))
        self._busy = set(busy)
        self.evicted: list[str] = []

    def busy(self, sid):
        return sid in self._busy

    async def evict(self, sid):
        self.evicted.append(sid)
        if sid == "refuses":
            raise RuntimeError("cannot")
        self.routes.set_status(sid, eviction.EVICTED)
        return True


def test_least_recently_used_idle_running_sandboxes_come_first():
    now = 1000.0
    lc = FakeLifecycle({"new": now - 1, "old": now - 500, "older": now - 900, "mid": now - 100, "busy": now - 999,
                        "pooled": now - 999, "paused": now - 999}, busy={"busy"}, status={"paused": "paused"})
    assert eviction.Evictor(lc).candidates(now) == ["older", "old", "mid"]


def test_a_round_evicts_until_memory_is_enough_and_skips_refusals_later(monkeypatch):
    now = time.monotonic()
    lc = FakeLifecycle({f"s{i}": now - 100 - i for i in range(10)} | {"refuses": now - 10_000})
    free = iter([100, 100, 5000])  # short for two batches, then enough
    monkeypatch.setattr(eviction, "mem_available_mb", lambda: next(free))
    ev = eviction.Evictor(lc)
    assert asyncio.run(ev.once()) == 7  # the refusal does not count
    assert lc.evicted[:5] == ["refuses", "s9", "s8", "s7", "s6"]
    assert "refuses" not in ev.candidates(time.monotonic())  # not tried again soon


def test_off_unless_the_operator_sets_a_line():
    lc = FakeLifecycle({})
    lc.settings.evict_below_free_mb = 0
    assert not eviction.Evictor(lc).enabled()


def test_mem_available_reads_meminfo(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal: 24000000 kB\nMemAvailable:   2048000 kB\n")
    assert eviction.mem_available_mb(str(tmp_path / "meminfo")) == 2000
