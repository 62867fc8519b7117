"""Per-session memory settings, rolling summaries, user roles, stored embeddings.

- sessions.settings: the session's memory strategy and sizes, its role and
  model, as a JSON object (absent keys fall back to the configured defaults).
- session_summaries: one rolling summary per session and the id of the last
  turn it covers, so only turns after it are ever summarised again.
- roles: system-role texts users add by name (the built-in ones live in code).
- embeddings: vectors of facts and turns from the server's embeddings
  endpoint, with a digest of the text they were made from, so unchanged text
  is never embedded twice.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("settings", sa.Text))
    op.create_table(
        "session_summaries",
        sa.Column(
            "session_id", sa.Integer,
            sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True,
        ),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("last_turn_id", sa.Integer, nullable=False),
        sa.Column("turn_count", sa.Integer, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "roles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "embeddings",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("item_id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("dimensions", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("kind IN ('fact', 'turn')", name="embedding_kind"),
    )


def downgrade() -> None:
    op.drop_table("embeddings")
    op.drop_table("roles")
    op.drop_table("session_summaries")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("settings")
