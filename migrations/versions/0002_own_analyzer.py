"""Full-text indexes hold kvchat's analyzed terms; vocabulary tables for ranking.

kvchat now stems, drops stopwords and segments CJK text itself (see
kvchat.textsearch), so the index stores ready-made terms with a plain
tokenizer instead of FTS5's porter stemmer. A fact's key is indexed without
its namespace (kvchat_index_key). The indexes are rebuilt from the
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


def _full_text(tokenizer: str, key_function: str) -> list[str]:
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
        "INSERT INTO turns_fts(rowid, content) SELECT id, kvchat_index_text(content) FROM turns",
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
    for statement in _full_text(NEW_TOKENIZER, "kvchat_index_key"):
        op.execute(statement)
    op.execute("CREATE VIRTUAL TABLE turns_terms USING fts5vocab(turns_fts, 'row')")
    op.execute("CREATE VIRTUAL TABLE facts_terms USING fts5vocab(facts_fts, 'row')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _drop_full_text()
    for statement in _full_text(OLD_TOKENIZER, "kvchat_index_text"):
        op.execute(statement)
