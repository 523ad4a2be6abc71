"""HopX token refresh generations: a refresh revokes the sandbox's previous token after a grace period.

Revision ID: 0005_token_generation
Revises: 0004_public_traffic
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_token_generation"
down_revision = "0004_public_traffic"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("token_generation", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("token_grace_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("token_grace_until")
        batch.drop_column("token_generation")
