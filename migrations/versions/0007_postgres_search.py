"""Full-text search on PostgreSQL: kvchat's terms in tsvectors under GIN indexes.

On PostgreSQL (see kvchat.postgres_search), turns_search holds each turn's
terms with its session, and facts_search each fact's with its user; the
rows go with their turn or fact (ON DELETE CASCADE). Existing turns and facts
are indexed here. The sequence kvchat_search_generation moves on after every
committed write, so that a process may keep term counts until it does. SQLite keeps its FTS5 tables (migrations 0002 and 0006):
on it this revision changes nothing.

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import TSVECTOR

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 1000


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _batches(columns: str, table: str):
    """The rows of `table`, BATCH at a time in order of id."""
    bind, last = op.get_bind(), 0
    while True:
        rows = bind.execute(
            sa.text(f"SELECT {columns} FROM {table} WHERE id > :last ORDER BY id LIMIT {BATCH}"), dict(last=last)
        ).all()
        if not rows:
            return
        yield [tuple(row) for row in rows]
        last = rows[-1][0]


def _index_existing() -> None:
    from kvchat import postgres_search

    for batch in _batches("id, session_id, content", "turns"):
        postgres_search.index_turns(op.get_bind(), batch)
    for batch in _batches("id, user_name, key, value", "facts"):
        postgres_search.index_facts(op.get_bind(), batch)


def upgrade() -> None:
    if not _postgres():
        return
    op.create_table(
        "turns_search",
        sa.Column("turn_id", sa.Integer, sa.ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("session_id", sa.Integer, nullable=False),
        sa.Column("terms", TSVECTOR, nullable=False),
    )
    op.create_index("ix_turns_search_terms", "turns_search", ["terms"], postgresql_using="gin")
    op.create_index("ix_turns_search_session_id", "turns_search", ["session_id"])
    op.create_table(
        "facts_search",
        sa.Column("fact_id", sa.Integer, sa.ForeignKey("facts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_name", sa.String(200), nullable=False),
        sa.Column("terms", TSVECTOR, nullable=False),
    )
    op.create_index("ix_facts_search_terms", "facts_search", ["terms"], postgresql_using="gin")
    op.create_index("ix_facts_search_user_name", "facts_search", ["user_name"])
    op.execute("CREATE SEQUENCE kvchat_search_generation")
    _index_existing()


def downgrade() -> None:
    if not _postgres():
        return
    op.execute("DROP SEQUENCE kvchat_search_generation")
    op.drop_table("facts_search")
    op.drop_table("turns_search")
