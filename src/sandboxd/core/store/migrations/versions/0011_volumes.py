"""Volumes (docs/e2b.md#volumes): a team's persistent directories, and the ones each sandbox mounts.

`sandboxes.volume_mounts` is JSON [{"volume_id", "name", "path"}]; null on sandboxes from before.

Revision ID: 0011_volumes
Revises: 0010_egress_policy
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_volumes"
down_revision = "0010_egress_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("team_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("team_id", "name", name="uq_volumes_team_name"),
    )
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("volume_mounts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("volume_mounts")
    op.drop_table("volumes")
