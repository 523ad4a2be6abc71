"""Platform metrics in Prometheus text format, on a registry of our own (tests can build many apps).

Sandboxes by state, create failures and the per-sandbox gauges are computed at scrape time from the store
and the sampler's latest readings; creates and their latency come from created events on the bus.
Per-sandbox series exist only behind `per_sandbox_prometheus` (their cardinality is unbounded).
"""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from sandboxd.core.models import REASON_ERROR
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import SandboxRow
from sandboxd.monitor.http_metrics import HttpMetrics
from sandboxd.monitor.series import Sample

CONTENT_TYPE = CONTENT_TYPE_LATEST
STATES = ("creating", "running", "paused", "stopped", "killed")


class _ScrapeCollector:
    def __init__(self, store: Store, latest: Callable[[], dict[str, Sample]], lag: Callable[[], tuple[float, float]],
                 per_sandbox: bool):
        self.store = store
        self.latest = latest
        self.lag = lag
        self.per_sandbox = per_sandbox

    def collect(self) -> Iterable[Metric]:
        by_state = GaugeMetricFamily("sandboxd_sandboxes", "Sandboxes by state", labels=["state"])
        with self.store.tx() as s:
            counts = dict(s.execute(select(SandboxRow.status, func.count()).group_by(SandboxRow.status)).all())
            # A create that failed leaves its row killed with reason "error" and no start: counted from the
            # store, so the figure survives restarts and needs no hook in the lifecycle service.
            failed = s.scalar(select(func.count()).select_from(SandboxRow).where(
                SandboxRow.kill_reason == REASON_ERROR, SandboxRow.started_at.is_(None))) or 0
        yield CounterMetricFamily("sandboxd_sandbox_create_failures", "Sandbox creates that failed", value=failed)
        for state in sorted(set(STATES) | set(counts)):
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        lag, duration = self.lag()
        yield GaugeMetricFamily("sandboxd_sampler_lag_seconds", "How late the last sampler tick started", value=lag)
        yield GaugeMetricFamily("sandboxd_sampler_tick_seconds", "Duration of the last sampler tick", value=duration)
        if not self.per_sandbox:
            return
        cpu = GaugeMetricFamily("sandboxd_sandbox_cpu_percent", "CPU used, % of the sandbox's quota", labels=["sandbox_id"])
        mem = GaugeMetricFamily("sandboxd_sandbox_memory_bytes", "Memory used", labels=["sandbox_id"])
        disk = GaugeMetricFamily("sandboxd_sandbox_disk_bytes", "Disk used", labels=["sandbox_id"])
        for sid, smp in sorted(self.latest().items()):
            cpu.add_metric([sid], smp.cpu_pct)
            mem.add_metric([sid], smp.mem_used)
            disk.add_metric([sid], smp.disk_used)
        yield from (cpu, mem, disk)


class PlatformMetrics:
    def __init__(self, store: Store, *, latest: Callable[[], dict[str, Sample]],
                 lag: Callable[[], tuple[float, float]], per_sandbox: bool):
        self.registry = CollectorRegistry(auto_describe=False)
        self.creates = Counter("sandboxd_sandbox_creates_total", "Sandboxes created", registry=self.registry)
        self.create_latency = Histogram("sandboxd_sandbox_create_seconds", "Time from create request to a ready sandbox",
                                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.deliveries = Counter("sandboxd_webhook_deliveries_total", "Webhook delivery attempts by outcome",
                                  ["outcome"], registry=self.registry)
        self.delivery_latency = Histogram("sandboxd_webhook_delivery_seconds", "Webhook delivery attempt duration",
                                          registry=self.registry)
        for outcome in ("delivered", "retry", "failed"):
            self.deliveries.labels(outcome)
        self.pauses = Counter("sandboxd_sandbox_pauses_total", "Sandboxes paused, by where their memory went",
                              ["where"], registry=self.registry)
        for where in ("disk", "memory"):
            self.pauses.labels(where)
        self.checkpoint_seconds = Histogram("sandboxd_checkpoint_seconds", "Time to write a paused sandbox to disk",
                                            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.checkpoint_bytes = Histogram("sandboxd_checkpoint_bytes", "Size of a paused sandbox's memory image",
                                          buckets=(8 << 20, 16 << 20, 32 << 20, 64 << 20, 128 << 20, 256 << 20,
                                                   512 << 20, 1 << 30, 4 << 30), registry=self.registry)
        self.restore_seconds = Histogram("sandboxd_restore_seconds", "Time to bring a sandbox back from disk",
                                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.evictions = Counter("sandboxd_sandbox_evictions_total", "Idle sandboxes written to disk for memory",
                                 registry=self.registry)
        self.http = HttpMetrics(self.registry)  # fed by the API's middleware and the gateway (wiring.py)
        self.registry.register(_ScrapeCollector(store, latest, lag, per_sandbox))

    def observe_created(self, seconds: float | None = None) -> None:
        """One sandbox created (the service calls it for every created event on the bus, with the time from
        the create request to running: the row's started_at - created_at)."""
        self.creates.inc()
        if seconds is not None:
            self.create_latency.observe(seconds)

    def observe_pause(self, data: dict) -> None:
        """A paused event's `pause` (core/lifecycle.py: where the memory went, and the checkpoint's figures)."""
        on_disk = bool(data.get("on_disk"))
        self.pauses.labels("disk" if on_disk else "memory").inc()
        if on_disk and isinstance(data.get("seconds"), (int, float)):
            self.checkpoint_seconds.observe(data["seconds"])
        if on_disk and isinstance(data.get("size_bytes"), int):
            self.checkpoint_bytes.observe(data["size_bytes"])

    def observe_eviction(self, data: dict) -> None:
        self.evictions.inc()
        cp = data.get("checkpoint") or {}
        if isinstance(cp.get("seconds"), (int, float)):
            self.checkpoint_seconds.observe(cp["seconds"])
        if isinstance(cp.get("size_bytes"), int):
            self.checkpoint_bytes.observe(cp["size_bytes"])

    def observe_resume(self, data: dict) -> None:
        if data.get("from_disk") and isinstance(data.get("seconds"), (int, float)):
            self.restore_seconds.observe(data["seconds"])

    def observe_delivery(self, outcome: str, seconds: float) -> None:
        self.deliveries.labels(outcome).inc()
        self.delivery_latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
