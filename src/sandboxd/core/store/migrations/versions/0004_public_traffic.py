"""Whether a sandbox's own ports answer without its token (E2B's network.allowPublicTraffic; default yes).

Revision ID: 0004_public_traffic
Revises: 0003_idempotency
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_public_traffic"
down_revision = "0003_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("public_traffic", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("public_traffic")
