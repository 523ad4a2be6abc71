"""Template tags (E2B's `name:tag`): a tag names one build of a template; each build records the image it made.

Revision ID: 0006_template_tags
Revises: 0005_token_generation
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_template_tags"
down_revision = "0005_token_generation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "template_tags",
        sa.Column("template_id", sa.String(64), primary_key=True),
        sa.Column("tag", sa.String(128), primary_key=True),
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("content_hash")
    op.drop_table("template_tags")
