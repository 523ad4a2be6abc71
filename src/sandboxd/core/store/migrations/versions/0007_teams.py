"""Teams: every key belongs to a team with a role; sandboxes and custom templates belong to a team.

Existing keys, sandboxes and custom templates go to the default team; existing admin keys stay operators and
become admins of the default team.

Revision ID: 0007_teams
Revises: 0006_template_tags
"""
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0007_teams"
down_revision = "0006_template_tags"
branch_labels = None
depends_on = None

DEFAULT_TEAM_ID = "team_default"  # fixed here: a migration must not follow later code


def upgrade() -> None:
    teams = op.create_table(
        "teams",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(teams, [{"id": DEFAULT_TEAM_ID, "name": "default", "created_at": datetime.now(timezone.utc)}])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("team_id", sa.String(64), nullable=False, server_default=DEFAULT_TEAM_ID))
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="member"))
    op.execute(sa.text("update api_keys set role = 'admin' where is_admin = :yes").bindparams(yes=True))
    for table in ("sandboxes", "templates"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("team_id", sa.String(64), nullable=True))
            batch.create_index(f"ix_{table}_team_id", ["team_id"])
    op.execute(sa.text("update sandboxes set team_id = :t").bindparams(t=DEFAULT_TEAM_ID))
    op.execute(sa.text("update templates set team_id = :t where is_public = :no").bindparams(
        t=DEFAULT_TEAM_ID, no=False))


def downgrade() -> None:
    for table in ("templates", "sandboxes"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_team_id")
            batch.drop_column("team_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("role")
        batch.drop_column("team_id")
    op.drop_table("teams")
