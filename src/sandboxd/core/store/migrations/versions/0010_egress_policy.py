"""A sandbox's egress policy (docs/network.md): JSON {allow_out, deny_out, dns_servers}; null is none.

Revision ID: 0010_egress_policy
Revises: 0009_on_timeout
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_egress_policy"
down_revision = "0009_on_timeout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("egress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("egress")
