"""SQLite: the number of rows holding each search term, kept between processes.

bm25 weighs a term by how many turns or facts hold it. FTS5 counts those by
walking the term's whole list of rows (fts5vocab), which for the common terms
of a large store is most of a fresh `kvchat ask`'s prompt: 110 ms at 1,000,000
turns, 40 ms at 100,000 facts. kvchat.store writes here the counts it made
of common terms (Store.KEPT_TERM_MIN_ROWS), with the number of rows there
were then, and uses them again while that number has moved by less than
Store.TERM_COUNT_DRIFT. Deleting a turn or a fact, or rewriting a turn's
text, empties that kind's counts, so the terms of deleted text do not stay
behind, and moves on that kind's deletion count (the row whose term is ''):
counts made before a deletion are not written after it. PostgreSQL counts
from its GIN index (migration 0007): on it this revision changes nothing.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# What empties a kind's counts. A turn whose text is rewritten
# (Store.update_turn) takes its old terms with it; a fact's earlier values
# stay in fact_history by design, so overwriting one does not.
_TRIGGERS = (
    ("turns_forget_term_counts", "DELETE ON turns", "turns"),
    ("turns_rewritten_forget_term_counts", "UPDATE OF content ON turns", "turns"),
    ("facts_forget_term_counts", "DELETE ON facts", "facts"),
)


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    if not _sqlite():
        return
    op.execute(
        "CREATE TABLE search_term_counts ("
        " kind TEXT NOT NULL,"  # 'turns' or 'facts'
        " term TEXT NOT NULL,"
        " documents INTEGER NOT NULL,"  # rows holding the term
        " counted_among INTEGER NOT NULL,"  # rows of that kind there were then
        " PRIMARY KEY (kind, term)) WITHOUT ROWID"
    )
    for name, event, kind in _TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} "
            f"BEGIN DELETE FROM search_term_counts WHERE kind = '{kind}' AND term <> ''; "
            f"INSERT INTO search_term_counts VALUES ('{kind}', '', 0, 1) "
            "ON CONFLICT (kind, term) DO UPDATE SET counted_among = counted_among + 1; END"
        )


def downgrade() -> None:
    if not _sqlite():
        return
    for name, _, _ in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    op.execute("DROP TABLE search_term_counts")
