"""Monitoring tables (revision 0002_monitoring): metric samples, webhooks, the webhook outbox, cursors."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sandboxd.core.store.base import Base
from sandboxd.core.store.tables import DEFAULT_TEAM_ID, UTCDateTime


class SampleRow(Base):
    """One reading of a sandbox's counters. `step` is 0 for a raw sample, 60 for a 1-minute average."""

    __tablename__ = "metric_samples"
    __table_args__ = (Index("ix_metric_samples_sandbox_ts", "sandbox_id", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[float] = mapped_column(Float, index=True)  # unix seconds: cheap range scans on both databases
    step: Mapped[int] = mapped_column(Integer, default=0)
    cpu_count: Mapped[float] = mapped_column(Float)
    cpu_pct: Mapped[float] = mapped_column(Float)
    mem_used: Mapped[int] = mapped_column(BigInteger)
    mem_total: Mapped[int] = mapped_column(BigInteger)
    mem_cache: Mapped[int] = mapped_column(BigInteger)
    disk_used: Mapped[int] = mapped_column(BigInteger)
    disk_total: Mapped[int] = mapped_column(BigInteger)
    net_rx: Mapped[int] = mapped_column(BigInteger)
    net_tx: Mapped[int] = mapped_column(BigInteger)


class WebhookRow(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    url: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    events: Mapped[list] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(Text)  # needed in clear to sign; never returned by the API
    team_id: Mapped[str] = mapped_column(String(64), index=True, default=DEFAULT_TEAM_ID,
                                         server_default=DEFAULT_TEAM_ID)  # revision 0008_team_quotas
    # Events with an id above this are delivered: a new webhook does not replay history.
    after_event_id: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeliveryRow(Base):
    """The outbox and the delivery log in one: one row per (event, webhook), updated per attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
        Index("ix_webhook_deliveries_pending", "status", "webhook_id", "event_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(64), index=True)
    event_id: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(64))
    sandbox_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    body: Mapped[str] = mapped_column(Text)  # frozen at fan-out: every retry sends the same bytes and signature
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)  # unix seconds
    last_attempt_id: Mapped[str | None] = mapped_column(String(64))  # the e2b-delivery-id last sent
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CursorRow(Base):
    """Named positions in the events table (the webhook fan-out resumes from here after a crash)."""

    __tablename__ = "monitor_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, default=0)
