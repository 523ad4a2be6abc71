"""core/reconcile.py: after a restart the store's rows and the runtime's sandboxes are made to agree, and the
watch finds sandboxes that died on their own. The lifecycle and the backend are stand-ins that record
what reconcile asks of them."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from sandboxd.core.reconcile import reconcile, watch_once
from sandboxd.core.routes import RouteTable, SandboxRoute
from sandboxd.runtime.base import RuntimeSandbox, RuntimeState, Stats


class Backend:
    def __init__(self, adopted: dict[str, RuntimeState], states: dict[str, RuntimeState] | None = None,
                 oom: set[str] = frozenset()):
        self.adopted, self.states, self.oom = adopted, states or {}, oom
        self.destroyed: list[str] = []

    async def recover(self):
        return [RuntimeSandbox(sid, st, Path(f"/s/{sid}.sock")) for sid, st in self.adopted.items()]

    async def state(self, sid):
        return self.states.get(sid)

    async def destroy(self, sid, *, background=False):
        self.destroyed.append(sid)

    async def stats(self, sid):
        return Stats(0, 1.0, 0, 0, oom_kills=1 if sid in self.oom else 0)


class Lifecycle:
    def __init__(self, backend, rows=(), pool_members=(), busy=()):
        self.backend, self.rows = backend, list(rows)
        self.pool = SimpleNamespace(owns=lambda sid: sid in pool_members)
        self.routes = RouteTable()
        self._busy = set(busy)
        self.calls: list[tuple] = []

    def live_sandboxes(self):
        return self.rows

    async def abandon(self, sid):
        self.calls.append(("abandon", sid))

    def track(self, sb, rt):
        self.calls.append(("track", sb.id, sb.status, rt and rt.state))

    def mark_lost(self, sb):
        self.calls.append(("lost", sb.id))

    def mark_status(self, sid, status):
        self.calls.append(("status", sid, status))
        return SimpleNamespace(id=sid, status=status)

    def busy(self, sid):
        return sid in self._busy

    async def kill(self, sid, reason):
        self.calls.append(("kill", sid, reason))


def _row(sid, status):
    return SimpleNamespace(id=sid, status=status, token_version=1)


def test_reconcile_makes_rows_and_runtime_agree():
    backend = Backend(
        adopted={"run": RuntimeState.RUNNING, "was-running": RuntimeState.STOPPED, "stray": RuntimeState.RUNNING,
                 "member": RuntimeState.PAUSED},
        states={"stopped": RuntimeState.STOPPED})
    lc = Lifecycle(backend, rows=[_row("half", "creating"), _row("run", "running"), _row("gone", "running"),
                                  _row("stopped", "stopped"), _row("was-running", "running")],
                   pool_members={"member"})
    asyncio.run(reconcile(lc))
    assert lc.calls == [
        ("abandon", "half"),  # never reported created: whatever was made goes
        ("track", "run", "running", RuntimeState.RUNNING),
        ("lost", "gone"),  # the runtime lost it: killed, node lost
        ("track", "stopped", "stopped", None),  # stopped and still on disk: tracked, no route
        ("status", "was-running", "stopped"),  # the runtime's word wins
        ("track", "was-running", "stopped", RuntimeState.STOPPED),
    ]
    assert backend.destroyed == ["stray"]  # unknown to the store; the pool's member is left to the pool


def test_watch_records_sandboxes_that_died_on_their_own():
    backend = Backend(adopted={}, states={"alive": RuntimeState.RUNNING, "paused": RuntimeState.PAUSED},
                      oom={"oomed"})
    lc = Lifecycle(backend, busy={"moving"})
    for sid, status in [("alive", "running"), ("paused", "paused"), ("oomed", "running"), ("crashed", "paused"),
                        ("moving", "running"), ("stopped", "stopped")]:
        lc.routes.put(sid, SandboxRoute(Path(f"/s/{sid}"), status, 1))
    asyncio.run(watch_once(lc))
    # a busy sandbox belongs to its transition, a stopped one has nothing running to lose
    assert lc.calls == [("kill", "oomed", "oom"), ("kill", "crashed", "error")]
