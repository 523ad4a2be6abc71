"""A sandbox's timeout may pause it instead of killing it, and traffic may resume it (E2B's `lifecycle`).

Existing sandboxes keep what they were created with: killed at their timeout, never resumed by traffic.

Revision ID: 0009_on_timeout
Revises: 0008_team_quotas
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_on_timeout"
down_revision = "0008_team_quotas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("on_timeout", sa.String(16), nullable=False, server_default="kill"))
        batch.add_column(sa.Column("auto_resume", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("auto_resume")
        batch.drop_column("on_timeout")
