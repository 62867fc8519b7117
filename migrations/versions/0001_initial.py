"""Sessions, turns, facts with their history, and the full-text indexes.

Revision ID: 0001
Revises:
"""

from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TOKENIZER = "porter unicode61 remove_diacritics 2"

# The indexes are kept in sync by the database itself. Text passes through
# kvchat_index_text (registered by kvchat on every connection) on its way in,
# which splits Chinese/Japanese/Korean runs into bigrams the tokenizer can use.
SQLITE_FULL_TEXT = [
    f"""CREATE VIRTUAL TABLE turns_fts USING fts5(
        content, content='turns', content_rowid='id', tokenize='{TOKENIZER}')""",
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
        key, value, content='facts', content_rowid='id', tokenize='{TOKENIZER}')""",
    """CREATE TRIGGER facts_fts_insert AFTER INSERT ON facts BEGIN
        INSERT INTO facts_fts(rowid, key, value)
        VALUES (new.id, kvchat_index_text(new.key), kvchat_index_text(new.value));
    END""",
    """CREATE TRIGGER facts_fts_delete AFTER DELETE ON facts BEGIN
        INSERT INTO facts_fts(facts_fts, rowid, key, value)
        VALUES ('delete', old.id, kvchat_index_text(old.key), kvchat_index_text(old.value));
    END""",
    """CREATE TRIGGER facts_fts_update AFTER UPDATE OF key, value ON facts BEGIN
        INSERT INTO facts_fts(facts_fts, rowid, key, value)
        VALUES ('delete', old.id, kvchat_index_text(old.key), kvchat_index_text(old.value));
        INSERT INTO facts_fts(rowid, key, value)
        VALUES (new.id, kvchat_index_text(new.key), kvchat_index_text(new.value));
    END""",
]


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("turn_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("token_count", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "session_id",
            sa.Integer,
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False, server_default="complete"),
        sa.Column("error", sa.Text),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("ref", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('system', 'user', 'assistant')", name="turn_role"),
        sa.CheckConstraint(
            "status IN ('complete', 'pending', 'unanswered', 'interrupted', 'length')",
            name="turn_status",
        ),
    )
    op.create_index("ix_turns_session_id_id", "turns", ["session_id", "id"])
    op.create_table(
        "facts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(200), nullable=False, unique=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("turn_id", sa.Integer, sa.ForeignKey("turns.id", ondelete="SET NULL")),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fact_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Text),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("turn_id", sa.Integer, sa.ForeignKey("turns.id", ondelete="SET NULL")),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("action IN ('set', 'forget')", name="fact_history_action"),
    )
    op.create_index("ix_fact_history_key_id", "fact_history", ["key", "id"])
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FULL_TEXT:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE facts_fts")
        op.execute("DROP TABLE turns_fts")
    op.drop_table("fact_history")
    op.drop_table("facts")
    op.drop_table("turns")
    op.drop_table("sessions")
