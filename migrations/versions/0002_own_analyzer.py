"""Full-text indexes hold kvchat's analyzed terms; vocabulary tables for ranking.

kvchat now stems, drops stopwords and segments CJK text itself (see
kvchat.textsearch), so the index stores ready-made terms with a plain
tokenizer instead of FTS5's porter stemmer. A fact's key is indexed without
its namespace (kvchat_index_key), and a turn with its session, so that a
search reads one session's matches only. The indexes are rebuilt from the
stored text. The fts5vocab tables expose how many rows hold each term, which
kvchat's ranking needs.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_TOKENIZER = "porter unicode61 remove_diacritics 2"
NEW_TOKENIZER = "unicode61 remove_diacritics 2"

TRIGGERS = ["turns_fts_insert", "turns_fts_delete", "turns_fts_update",
            "facts_fts_insert", "facts_fts_delete", "facts_fts_update"]


def _old_turns_full_text(tokenizer: str) -> list[str]:
    return [
        f"""CREATE VIRTUAL TABLE turns_fts USING fts5(
            content, content='turns', content_rowid='id', tokenize='{tokenizer}')""",
        """CREATE TRIGGER turns_fts_insert AFTER INSERT ON turns BEGIN
            INSERT INTO turns_fts(rowid, content) VALUES (new.id, kvchat_index_text(new.content));
        END""",
        """CREATE TRIGGER turns_fts_delete AFTER DELETE ON turns BEGIN
            INSERT INTO turns_fts(turns_fts, rowid, content)
            VALUES ('delete', old.id, kvchat_index_text(old.content));
        END""",
        """CREATE TRIGGER turns_fts_update AFTER UPDATE OF content ON turns BEGIN
            INSERT INTO turns_fts(turns_fts, rowid, content)
            VALUES ('delete', old.id, kvchat_index_text(old.content));
            INSERT INTO turns_fts(rowid, content) VALUES (new.id, kvchat_index_text(new.content));
        END""",
        "INSERT INTO turns_fts(rowid, content) SELECT id, kvchat_index_text(content) FROM turns",
    ]


# A turn is indexed with its session as a term of its own ("s42" in the
# session_id column), so a search ANDs it in and FTS5 reads only that
# session's matches, instead of ranking every session's and filtering after.
TURNS_FULL_TEXT = [
    f"""CREATE VIRTUAL TABLE turns_fts USING fts5(
        session_id, content, content='turns', content_rowid='id', tokenize='{NEW_TOKENIZER}')""",
    """CREATE TRIGGER turns_fts_insert AFTER INSERT ON turns BEGIN
        INSERT INTO turns_fts(rowid, session_id, content)
        VALUES (new.id, 's' || new.session_id, kvchat_index_text(new.content));
    END""",
    """CREATE TRIGGER turns_fts_delete AFTER DELETE ON turns BEGIN
        INSERT INTO turns_fts(turns_fts, rowid, session_id, content)
        VALUES ('delete', old.id, 's' || old.session_id, kvchat_index_text(old.content));
    END""",
    """CREATE TRIGGER turns_fts_update AFTER UPDATE OF session_id, content ON turns BEGIN
        INSERT INTO turns_fts(turns_fts, rowid, session_id, content)
        VALUES ('delete', old.id, 's' || old.session_id, kvchat_index_text(old.content));
        INSERT INTO turns_fts(rowid, session_id, content)
        VALUES (new.id, 's' || new.session_id, kvchat_index_text(new.content));
    END""",
    """INSERT INTO turns_fts(rowid, session_id, content)
       SELECT id, 's' || session_id, kvchat_index_text(content) FROM turns""",
]


def _facts_full_text(tokenizer: str, key_function: str) -> list[str]:
    return [
        f"""CREATE VIRTUAL TABLE facts_fts USING fts5(
            key, value, content='facts', content_rowid='id', tokenize='{tokenizer}')""",
        f"""CREATE TRIGGER facts_fts_insert AFTER INSERT ON facts BEGIN
            INSERT INTO facts_fts(rowid, key, value)
            VALUES (new.id, {key_function}(new.key), kvchat_index_text(new.value));
        END""",
        f"""CREATE TRIGGER facts_fts_delete AFTER DELETE ON facts BEGIN
            INSERT INTO facts_fts(facts_fts, rowid, key, value)
            VALUES ('delete', old.id, {key_function}(old.key), kvchat_index_text(old.value));
        END""",
        f"""CREATE TRIGGER facts_fts_update AFTER UPDATE OF key, value ON facts BEGIN
            INSERT INTO facts_fts(facts_fts, rowid, key, value)
            VALUES ('delete', old.id, {key_function}(old.key), kvchat_index_text(old.value));
            INSERT INTO facts_fts(rowid, key, value)
            VALUES (new.id, {key_function}(new.key), kvchat_index_text(new.value));
        END""",
        f"""INSERT INTO facts_fts(rowid, key, value)
           SELECT id, {key_function}(key), kvchat_index_text(value) FROM facts""",
    ]


def _drop_full_text() -> None:
    for trigger in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for table in ("turns_terms", "facts_terms", "turns_fts", "facts_fts"):
        op.execute(f"DROP TABLE IF EXISTS {table}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _drop_full_text()
    for statement in TURNS_FULL_TEXT + _facts_full_text(NEW_TOKENIZER, "kvchat_index_key"):
        op.execute(statement)
    op.execute("CREATE VIRTUAL TABLE turns_terms USING fts5vocab(turns_fts, 'row')")
    op.execute("CREATE VIRTUAL TABLE facts_terms USING fts5vocab(facts_fts, 'row')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _drop_full_text()
    for statement in _old_turns_full_text(OLD_TOKENIZER) + _facts_full_text(OLD_TOKENIZER, "kvchat_index_text"):
        op.execute(statement)
