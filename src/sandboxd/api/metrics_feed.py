"""Per-sandbox metric feeds for SSE: one poller per (sandbox, interval), shared by every subscriber.

Each snapshot gets an increasing id; the last snapshots are kept for a while after the last subscriber
leaves, so a client that reconnects with Last-Event-ID gets what it missed.

A frame is the agent's counters (requests, executions, processes...) with the `system` block of the HopX
contract (§5.6) filled from the monitor's latest sample of the sandbox's cgroup when there is one: measured
from the host, against the sandbox's own limits (the agent only sees what /proc inside shows it).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from sandboxd.errors import NotFound
from sandboxd.core.lifecycle import LifecycleService
from sandboxd.core.models import RUNNING, iso
from sandboxd.runtime import agentclient

log = logging.getLogger(__name__)

KEEP = 600  # snapshots kept per feed
LINGER = 120.0  # seconds a feed keeps sampling after its last subscriber left
INT_KEYS = ("uptime_seconds", "total_requests", "total_errors", "error_count", "active_executions", "total_executions")


def normalize(snapshot: dict[str, Any], sandbox_id: str) -> dict[str, Any]:
    """The dashboard formats these with `:6d`, so they must be ints; the rest passes through."""
    out = dict(snapshot)
    for k in INT_KEYS:
        v = out.get(k)
        if isinstance(v, float):
            out[k] = int(v)
        elif v is None:
            out[k] = 0
    out.setdefault("error_count", out.get("total_errors", 0))
    out.setdefault("timestamp", iso_now())
    out["sandbox_id"] = sandbox_id
    return out


def system_block(sample: Any, agent_system: Any = None) -> dict[str, Any]:
    """Contract §5.6 `SystemMetrics` from a monitor Sample, plus when it was taken and network bytes."""
    def usage(used: int, total: int) -> dict[str, Any]:
        return {"total": int(total), "used": int(used), "free": max(int(total) - int(used), 0),
                "usage_percent": round(used / total * 100, 2) if total else 0.0}

    uptime = agent_system.get("uptime") if isinstance(agent_system, dict) else None
    return {"cpu": {"usage_percent": round(float(sample.cpu_pct), 2), "cores": max(1, round(sample.cpu_count))},
            "memory": {**usage(sample.mem_used, sample.mem_total), "cache": int(sample.mem_cache)},
            "disk": usage(sample.disk_used, sample.disk_total),
            "network": {"rx_bytes": int(sample.net_rx), "tx_bytes": int(sample.net_tx)},
            "uptime": uptime if isinstance(uptime, (int, float)) else 0.0,
            "sampled_at": sample.ts, "source": "monitor"}


def iso_now() -> str:
    from datetime import datetime, timezone

    return iso(datetime.now(timezone.utc))


@dataclass
class Feed:
    sandbox_id: str
    interval: float
    items: deque = field(default_factory=lambda: deque(maxlen=KEEP))
    ended: dict[str, Any] | None = None
    subscribers: int = 0
    left_at: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    last_id: int = 0

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class MetricsHub:
    def __init__(self, lifecycle: LifecycleService, monitor: Any | Callable[[], Any] | None = None):
        """monitor: the MonitorService (or a function returning it). Without one, frames carry the agent's own
        `system` block."""
        self.lifecycle = lifecycle
        self.monitor = monitor
        self.feeds: dict[tuple[str, float], Feed] = {}

    def _latest(self, sandbox_id: str) -> Any:
        mon = self.monitor() if callable(self.monitor) else self.monitor
        try:
            return mon.latest(sandbox_id) if mon is not None else None
        except Exception as exc:  # a metrics frame without host figures beats no frame
            log.debug("monitor sample of %s failed: %s", sandbox_id, exc)
            return None

    def join(self, sandbox_id: str, interval: float) -> Feed:
        key = (sandbox_id, interval)
        feed = self.feeds.get(key)
        if feed is None or feed.task is None or feed.task.done():
            feed = Feed(sandbox_id, interval, items=feed.items if feed else deque(maxlen=KEEP),
                        last_id=feed.last_id if feed else 0)
            self.feeds[key] = feed
            feed.task = asyncio.create_task(self._run(feed), name=f"metrics-feed-{sandbox_id}")
        feed.subscribers += 1
        return feed

    def leave(self, feed: Feed) -> None:
        feed.subscribers -= 1
        feed.left_at = time.monotonic()

    async def _run(self, feed: Feed) -> None:
        sid = feed.sandbox_id
        while True:
            route = self.lifecycle.routes.get(sid)
            if route is None:
                try:
                    sb = self.lifecycle.get(sid)
                    if sb.status == "creating":
                        await asyncio.sleep(feed.interval)
                        continue
                except NotFound:
                    feed.ended = {"sandbox_id": sid, "status": "killed", "timestamp": iso_now()}
                    feed.notify()
                    return
            elif route.status == RUNNING:
                try:
                    snap = await agentclient.call_json(route.socket, "GET", "/metrics/snapshot", timeout=3.0, only_200=True)
                    if isinstance(snap, dict):
                        out = normalize(snap, sid)
                        sample = await asyncio.to_thread(self._latest, sid)  # may read the store
                        if sample is not None:
                            out["system"] = system_block(sample, snap.get("system"))
                        # ms timestamps: increasing, and still meaningful after a server restart
                        feed.last_id = max(feed.last_id + 1, int(time.time() * 1000))
                        feed.items.append((feed.last_id, out))
                        feed.notify()
                except (OSError, ValueError, asyncio.TimeoutError) as exc:
                    log.debug("metrics snapshot of %s failed: %s", sid, exc)
            if feed.subscribers <= 0 and time.monotonic() - feed.left_at > LINGER:
                return
            await asyncio.sleep(feed.interval)

    async def close(self) -> None:
        for feed in self.feeds.values():
            if feed.task:
                feed.task.cancel()
        await asyncio.gather(*(f.task for f in self.feeds.values() if f.task), return_exceptions=True)
