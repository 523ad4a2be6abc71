"""Monitoring tables: metric samples, webhooks, webhook deliveries (the outbox), cursors.

Revision ID: 0002_monitoring
Revises: 0001_core
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_monitoring"
down_revision = "0001_core"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "metric_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sandbox_id", sa.String(64), nullable=False),
        sa.Column("ts", sa.Float, nullable=False, index=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("cpu_count", sa.Float, nullable=False),
        sa.Column("cpu_pct", sa.Float, nullable=False),
        sa.Column("mem_used", sa.BigInteger, nullable=False),
        sa.Column("mem_total", sa.BigInteger, nullable=False),
        sa.Column("mem_cache", sa.BigInteger, nullable=False),
        sa.Column("disk_used", sa.BigInteger, nullable=False),
        sa.Column("disk_total", sa.BigInteger, nullable=False),
        sa.Column("net_rx", sa.BigInteger, nullable=False),
        sa.Column("net_tx", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_metric_samples_sandbox_ts", "metric_samples", ["sandbox_id", "ts"])
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("after_event_id", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("webhook_id", sa.String(64), nullable=False, index=True),
        sa.Column("event_id", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("sandbox_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_attempt_id", sa.String(64)),
        sa.Column("response_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("latency_ms", sa.Float),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
    )
    op.create_index("ix_webhook_deliveries_pending", "webhook_deliveries", ["status", "webhook_id", "event_id"])
    op.create_table(
        "monitor_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
    op.drop_index("ix_metric_samples_sandbox_ts", table_name="metric_samples")
    for table in ("monitor_cursors", "webhook_deliveries", "webhooks", "metric_samples"):
        op.drop_table(table)
