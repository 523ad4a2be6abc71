"""Idempotency keys of E2B creates, kept across control-plane restarts (24 h).

Revision ID: 0003_idempotency
Revises: 0002_monitoring
"""
import sqlalchemy as sa
from alembic import op

revision = "0003_idempotency"
down_revision = "0002_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(64), primary_key=True),  # the API key id: keys never cross callers
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),  # sha256 of the request body
        sa.Column("sandbox_id", sa.String(64), nullable=True),  # null while the first create runs
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
