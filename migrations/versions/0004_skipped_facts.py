"""Facts left out as secrets, without their values.

- skipped_facts: one row for each fact that extraction (by rules or by the
  model) did not store because its key or value looked like a secret: the
  key it would have had (NULL when the key itself looked like one), the kind
  of secret, where it came from, the turn and when. The value is never kept.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "skipped_facts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(200)),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("turn_id", sa.Integer, sa.ForeignKey("turns.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("skipped_facts")
