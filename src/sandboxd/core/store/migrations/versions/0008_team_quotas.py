"""Teams II: per-team quotas, templates a team publishes to every team, webhooks that belong to a team.

Quota columns are null until the operator sets them: null is no limit. `team_quotas` holds the limits a team's
admin sets for the team within the operator's (JSON: quota name -> limit).
Existing webhooks go to the default team (they were the operator's; the operator still sees them all).

Revision ID: 0008_team_quotas
Revises: 0007_teams
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_team_quotas"
down_revision = "0007_teams"
branch_labels = None
depends_on = None

DEFAULT_TEAM_ID = "team_default"  # fixed here: a migration must not follow later code
QUOTAS = ("max_sandboxes", "max_vcpu", "max_memory_mb", "max_disk_mb", "max_templates", "max_creates_per_minute")


def upgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        for column in QUOTAS:
            batch.add_column(sa.Column(column, sa.Integer(), nullable=True))
        batch.add_column(sa.Column("team_quotas", sa.JSON(), nullable=True))
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("published", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("team_id", sa.String(64), nullable=False, server_default=DEFAULT_TEAM_ID))
        batch.create_index("ix_webhooks_team_id", ["team_id"])


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_index("ix_webhooks_team_id")
        batch.drop_column("team_id")
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("published")
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("team_quotas")
        for column in reversed(QUOTAS):
            batch.drop_column(column)
