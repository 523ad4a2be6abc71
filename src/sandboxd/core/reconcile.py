"""Restart safety: after a crash or restart, make the store's rows and the runtime's sandboxes agree.

`watch_once` is the running counterpart: a sandbox whose processes died under us (OOM, crash) is marked
killed with reason oom or error. Rows still `creating` were never reported created: whatever was half-made is destroyed. Live rows the
runtime lost are marked killed (reason node_lost, with an event). Runtime sandboxes the store does not
know are destroyed. Everything else is adopted: routes and timeouts are rebuilt in memory.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sandboxd.core.eviction import EVICTED
from sandboxd.core.models import CREATING, PAUSED, RUNNING, STOPPED
from sandboxd.errors import NotFound
from sandboxd.runtime.base import RuntimeState

if TYPE_CHECKING:
    from sandboxd.core.lifecycle import LifecycleService

log = logging.getLogger(__name__)


async def reconcile(lc: "LifecycleService") -> None:
    adopted = {rt.id: rt for rt in await lc.backend.recover()}
    known = set()
    for sb in lc.live_sandboxes():
        known.add(sb.id)
        rt = adopted.get(sb.id)
        if sb.status == CREATING:
            # Never reported created: remove whatever was half-made.
            await lc.abandon(sb.id)
            continue
        if rt is None:
            state = await lc.backend.state(sb.id)
            if sb.status == STOPPED and state == RuntimeState.STOPPED:
                lc.track(sb, None)
                continue
            lc.mark_lost(sb)
            continue
        actual = {RuntimeState.RUNNING: RUNNING, RuntimeState.PAUSED: PAUSED, RuntimeState.STOPPED: STOPPED}[rt.state]
        if sb.status == RUNNING and rt.on_disk:  # evicted (core/eviction.py): still running to its clients
            lc.track(sb, rt)
            lc.routes.set_status(sb.id, EVICTED)
            continue
        if actual != sb.status:
            sb = lc.mark_status(sb.id, actual)
        lc.track(sb, rt)
    for sid in adopted.keys() - known:
        if lc.pool is not None and lc.pool.owns(sid):
            continue  # a frozen warm-pool member: the pool adopts it
        log.warning("destroying sandbox %s that the store does not know", sid)
        try:
            await lc.backend.destroy(sid)
        except Exception:
            log.exception("destroying stray sandbox %s failed", sid)


async def watch_once(lc: "LifecycleService") -> None:
    """Find sandboxes that died on their own (OOM kill, crashed init) and record them as killed."""
    for i, (sid, route) in enumerate(lc.routes.items()):
        if i % 64 == 63:  # a state read is ~0.1 ms of file reads that never yield: let requests in between
            await asyncio.sleep(0)
        if route.status not in (RUNNING, PAUSED) or lc.busy(sid):
            continue  # a transition in progress owns the sandbox
        try:
            state = await lc.backend.state(sid)
        except Exception:
            log.exception("state of %s unavailable", sid)
            continue
        if state in (RuntimeState.RUNNING, RuntimeState.PAUSED) or lc.routes.get(sid) is not route \
                or route.status not in (RUNNING, PAUSED):
            continue
        reason = "error"
        try:
            if (await lc.backend.stats(sid)).oom_kills > 0:
                reason = "oom"
        except Exception:
            pass
        log.warning("sandbox %s died on its own (%s); recording it as killed", sid, reason)
        try:
            await lc.kill(sid, reason)
        except NotFound:
            pass
        except Exception:
            log.exception("cleaning up dead sandbox %s failed", sid)
