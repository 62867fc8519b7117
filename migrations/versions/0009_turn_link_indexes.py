"""Indexes on the links from facts, their history and skipped facts to the
turn they were learnt from.

Each link is a foreign key with ON DELETE SET NULL, so deleting a turn makes
the database look for the rows pointing at it, and without an index that
reads the whole table, once per deleted turn. Deleting a session of 1,000
turns from a store of 1,000,000 turns and 100,000 facts took 76 s, 64 of
them in those scans (docs/performance.md). Both engines need the indexes:
neither indexes a foreign key by itself.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_facts_turn_id", "facts"),
    ("ix_fact_history_turn_id", "fact_history"),
    ("ix_skipped_facts_turn_id", "skipped_facts"),
)


def upgrade() -> None:
    for name, table in _INDEXES:
        op.create_index(name, table, ["turn_id"])


def downgrade() -> None:
    for name, table in _INDEXES:
        op.drop_index(name, table_name=table)
