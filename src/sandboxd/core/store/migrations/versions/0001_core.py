"""Core tables: sandboxes, templates, builds, api keys (hashed), events (monotonic id for SSE resume).

Revision ID: 0001_core
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("template_id", sa.String(64), index=True),
        sa.Column("template_name", sa.String(128)),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("vcpu", sa.Float, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("disk_mb", sa.Integer, nullable=False),
        sa.Column("internet_access", sa.Boolean, nullable=False),
        sa.Column("env_vars", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("timeout_seconds", sa.Integer),
        sa.Column("expires_at", TS),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("started_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("kill_reason", sa.String(32)),
        sa.Column("api_key_id", sa.String(64)),
        sa.Column("token_version", sa.Integer, nullable=False),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("category", sa.String(64)),
        sa.Column("language", sa.String(64)),
        sa.Column("is_public", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("build_id", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("vcpu", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("disk_gb", sa.Integer, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "builds",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("template_id", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("current_step", sa.String(256)),
        sa.Column("error_message", sa.Text),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("completed_at", TS),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(64), nullable=False, index=True),
        sa.Column("sandbox_id", sa.String(64), index=True),
        sa.Column("template_id", sa.String(64)),
        sa.Column("timestamp", TS, nullable=False, index=True),
        sa.Column("data", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("events", "api_keys", "builds", "templates", "sandboxes"):
        op.drop_table(table)
