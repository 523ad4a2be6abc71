"""Metric history in the store: batched writes, range reads, 1-minute downsampling and retention.

Raw samples (step 0) are kept for `metrics_downsample_after_seconds`; older ones are replaced by one
averaged row per sandbox per minute (step 60), and everything older than the retention is dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, select

from sandboxd.core.store.db import Store
from sandboxd.core.store.monitoring import SampleRow

DOWNSAMPLE_STEP = 60
_COLUMNS = ("cpu_count", "cpu_pct", "mem_used", "mem_total", "mem_cache", "disk_used", "disk_total", "net_rx", "net_tx")


@dataclass(frozen=True)
class Sample:
    sandbox_id: str
    ts: float  # unix seconds
    cpu_count: float
    cpu_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int
    net_rx: int = 0
    net_tx: int = 0
    step: int = 0

    def to_e2b(self) -> dict[str, Any]:
        """E2B's SandboxMetric: the SDK's parser pops all nine keys, so every one is always present."""
        when = datetime.fromtimestamp(self.ts, timezone.utc)
        return {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "timestampUnix": int(self.ts),
            "cpuCount": max(1, round(self.cpu_count)),
            "cpuUsedPct": round(self.cpu_pct, 2),
            "memUsed": self.mem_used,
            "memTotal": self.mem_total,
            "memCache": self.mem_cache,
            "diskUsed": self.disk_used,
            "diskTotal": self.disk_total,
        }

    def to_wire(self) -> dict[str, Any]:
        """Snake-case form for our own API and SSE streams (adds network bytes)."""
        d = asdict(self)
        d["cpu_count"] = max(1, round(self.cpu_count))
        d["cpu_pct"] = round(self.cpu_pct, 2)
        return d


def _row_to_sample(r: SampleRow) -> Sample:
    return Sample(r.sandbox_id, r.ts, r.cpu_count, r.cpu_pct, r.mem_used, r.mem_total, r.mem_cache,
                  r.disk_used, r.disk_total, r.net_rx, r.net_tx, r.step)


class SeriesStore:
    def __init__(self, store: Store, *, retention_seconds: int, downsample_after_seconds: int = 3600):
        self.store = store
        self.retention = retention_seconds
        self.downsample_after = downsample_after_seconds

    def write(self, samples: Iterable[Sample]) -> None:
        rows = [asdict(s) for s in samples]
        if not rows:
            return
        with self.store.tx() as s:  # one statement for the whole tick: the sampler's main cost
            s.execute(insert(SampleRow), rows)

    def range(self, sandbox_id: str, start: float | None = None, end: float | None = None) -> list[Sample]:
        q = select(SampleRow).where(SampleRow.sandbox_id == sandbox_id)
        if start is not None:
            q = q.where(SampleRow.ts >= start)
        if end is not None:
            q = q.where(SampleRow.ts <= end)
        with self.store.tx() as s:
            return [_row_to_sample(r) for r in s.scalars(q.order_by(SampleRow.ts))]

    def latest(self, sandbox_ids: list[str]) -> dict[str, Sample]:
        if not sandbox_ids:
            return {}
        newest = (select(SampleRow.sandbox_id, func.max(SampleRow.ts).label("ts"))
                  .where(SampleRow.sandbox_id.in_(sandbox_ids)).group_by(SampleRow.sandbox_id).subquery())
        q = select(SampleRow).join(newest, (SampleRow.sandbox_id == newest.c.sandbox_id) & (SampleRow.ts == newest.c.ts))
        with self.store.tx() as s:
            return {r.sandbox_id: _row_to_sample(r) for r in s.scalars(q)}

    def compact(self, now: float) -> tuple[int, int]:
        """Downsample raw samples older than the threshold and drop expired ones; returns (averaged, dropped).

        Grouping happens here rather than in SQL: float-to-bucket arithmetic differs between SQLite and
        PostgreSQL, and a minute's worth of raw rows is small.
        """
        cutoff = now - self.downsample_after
        cutoff -= cutoff % DOWNSAMPLE_STEP  # only whole minutes, so a bucket is averaged exactly once
        with self.store.tx() as s:
            old = s.scalars(select(SampleRow).where(SampleRow.step == 0, SampleRow.ts < cutoff)).all()
            buckets: dict[tuple[str, int], list[SampleRow]] = {}
            for r in old:
                buckets.setdefault((r.sandbox_id, int(r.ts // DOWNSAMPLE_STEP)), []).append(r)
            if buckets:
                s.execute(delete(SampleRow).where(SampleRow.step == 0, SampleRow.ts < cutoff))
                rows = []
                for (sandbox_id, b), group in buckets.items():
                    row: dict[str, Any] = {"sandbox_id": sandbox_id, "ts": float(b * DOWNSAMPLE_STEP), "step": DOWNSAMPLE_STEP}
                    for c in _COLUMNS:
                        avg = sum(getattr(r, c) for r in group) / len(group)
                        row[c] = avg if c in ("cpu_count", "cpu_pct") else int(round(avg))
                    rows.append(row)
                s.execute(insert(SampleRow.__table__), rows)  # type: ignore[arg-type]  # Core executemany: no ORM bookkeeping per row
            dropped = s.execute(delete(SampleRow).where(SampleRow.ts < now - self.retention)).rowcount or 0  # type: ignore[attr-defined]
        return len(buckets), dropped

    def forget(self, sandbox_id: str) -> None:
        with self.store.tx() as s:
            s.execute(delete(SampleRow).where(SampleRow.sandbox_id == sandbox_id))
