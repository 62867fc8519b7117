"""PostgreSQL: the number of rows holding each search term, kept between
processes, as 0008 keeps them on SQLite.

Counting how many turns hold a common term reads every row the GIN index
lists for it: 0.3 s for one term at 1,000,000 turns. A fresh process counted
each common term of its question once, so on a store that size a fresh
`kvchat ask` spent 0.3 s at the median, and up to 7 s, building its prompt
(docs/performance.md). kvchat.store keeps the counts here as on SQLite: with
the number of rows there were then, used while that number has moved by
less than Store.TERM_COUNT_DRIFT. Deleting turns or facts, or rewriting a
turn's text, empties that kind's counts and moves on its deletion count (the
row whose term is ''). Unlike SQLite, PostgreSQL lets several users write at
once, and the counts are shared by all of them: the trigger takes
TERM_COUNTS_LOCK (kvchat.store) before it empties them, and the counts are
written in a short transaction of their own that takes the same lock or
skips the write (Store._keep_term_counts_apart). On SQLite this revision
changes nothing.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# As Store.TERM_COUNTS_LOCK when this revision was written ("kvcnt" in ASCII);
# a migration keeps its own copy, as it stays as it was written.
TERM_COUNTS_LOCK = 0x6B76636E74

# The same events as in 0008: a fact's earlier values stay in fact_history by
# design, so overwriting one does not empty the counts.
_TRIGGERS = (
    ("turns_forget_term_counts", "DELETE ON turns", "turns"),
    ("turns_rewritten_forget_term_counts", "UPDATE OF content ON turns", "turns"),
    ("facts_forget_term_counts", "DELETE ON facts", "facts"),
)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgres():
        return
    op.execute(
        "CREATE TABLE search_term_counts ("
        " kind TEXT NOT NULL,"
        " term TEXT NOT NULL,"
        " documents INTEGER NOT NULL,"
        " counted_among INTEGER NOT NULL,"
        " PRIMARY KEY (kind, term))"
    )
    # A DELETE that removed nothing (a session with no turns, a fact key not
    # stored) leaves the counts as they are: `gone` holds the rows removed.
    op.execute(
        "CREATE FUNCTION kvchat_forget_term_counts() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'DELETE' THEN IF NOT EXISTS (SELECT 1 FROM gone) THEN RETURN NULL; END IF; END IF; "
        f"PERFORM pg_advisory_xact_lock({TERM_COUNTS_LOCK}); "
        "DELETE FROM search_term_counts WHERE kind = TG_ARGV[0] AND term <> ''; "
        "INSERT INTO search_term_counts VALUES (TG_ARGV[0], '', 0, 1) ON CONFLICT (kind, term) "
        "DO UPDATE SET counted_among = search_term_counts.counted_among + 1; "
        "RETURN NULL; END $$"
    )
    for name, event, kind in _TRIGGERS:
        # PostgreSQL keeps no table of removed rows for an UPDATE OF a column.
        removed = " REFERENCING OLD TABLE AS gone" if event.startswith("DELETE") else ""
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event}{removed} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION kvchat_forget_term_counts('{kind}')"
        )


def downgrade() -> None:
    if not _postgres():
        return
    for name, event, _ in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {event.split()[-1]}")
    op.execute("DROP FUNCTION kvchat_forget_term_counts()")
    op.execute("DROP TABLE search_term_counts")
