"""Memories belong to a user, so several people can share one store.

- user_name on sessions, facts, fact_history, skipped_facts, roles and
  model_calls: whose row it is. Turns, summaries and embeddings belong to a
  session or a fact, and through it to its user.
- A session name, a fact key and a role name are unique per user now, not in
  the whole store: two people may both have a session called "default" and a
  fact "editor".
- facts_fts indexes the fact's user as a term of its own (user_name: "u"
  and the name's UTF-8 bytes in hex, one token whatever the name holds), as
  turns_fts does a turn's session, so that a fact search ranks one user's
  facts only, inside the index. Rebuilding the facts table drops its
  triggers, so the index and its triggers are made anew and refilled from
  the facts.
- Every row stored before belongs to the user who runs the upgrade (the
  user kvchat runs as: --user, KVCHAT_USER, or the operating system's user
  name): the person whose store it has been keeps seeing their memories.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OWNED_TABLES = ("sessions", "facts", "fact_history", "skipped_facts", "roles", "model_calls")

# Where an inline UNIQUE had no name, batch mode needs one to drop it by.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}

TOKENIZER = "unicode61 remove_diacritics 2"
FACT_TRIGGERS = ("facts_fts_insert", "facts_fts_delete", "facts_fts_update")

# kvchat_index_user is registered on every connection (see kvchat.database).
FACTS_FULL_TEXT = [
    f"""CREATE VIRTUAL TABLE facts_fts USING fts5(
        user_name, key, value, content='facts', content_rowid='id', tokenize='{TOKENIZER}')""",
    """CREATE TRIGGER facts_fts_insert AFTER INSERT ON facts BEGIN
        INSERT INTO facts_fts(rowid, user_name, key, value)
        VALUES (new.id, kvchat_index_user(new.user_name), kvchat_index_key(new.key),
                kvchat_index_text(new.value));
    END""",
    """CREATE TRIGGER facts_fts_delete AFTER DELETE ON facts BEGIN
        INSERT INTO facts_fts(facts_fts, rowid, user_name, key, value)
        VALUES ('delete', old.id, kvchat_index_user(old.user_name), kvchat_index_key(old.key),
                kvchat_index_text(old.value));
    END""",
    """CREATE TRIGGER facts_fts_update AFTER UPDATE OF user_name, key, value ON facts BEGIN
        INSERT INTO facts_fts(facts_fts, rowid, user_name, key, value)
        VALUES ('delete', old.id, kvchat_index_user(old.user_name), kvchat_index_key(old.key),
                kvchat_index_text(old.value));
        INSERT INTO facts_fts(rowid, user_name, key, value)
        VALUES (new.id, kvchat_index_user(new.user_name), kvchat_index_key(new.key),
                kvchat_index_text(new.value));
    END""",
    """INSERT INTO facts_fts(rowid, user_name, key, value)
       SELECT id, kvchat_index_user(user_name), kvchat_index_key(key), kvchat_index_text(value) FROM facts""",
    "CREATE VIRTUAL TABLE facts_terms USING fts5vocab(facts_fts, 'row')",
]


def _upgrading_user() -> str:
    from kvchat.users import default_user

    return op.get_context().config.attributes.get("user_name") or default_user()


def _drop_facts_full_text() -> None:
    for trigger in FACT_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS facts_terms")
    op.execute("DROP TABLE IF EXISTS facts_fts")


def _unique_per_user(table: str, column: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        # PostgreSQL named the inline UNIQUE itself (sessions_name_key) and
        # alters a table in place: no copy of it is made.
        op.drop_constraint(_unique_on(table, [column]), table, type_="unique")
        op.create_unique_constraint(f"uq_{table}_user_name_{column}", table, ["user_name", column])
        return
    with op.batch_alter_table(table, recreate="always", naming_convention=NAMING) as batch:
        batch.drop_constraint(f"uq_{table}_{column}", type_="unique")
        batch.create_unique_constraint(f"uq_{table}_user_name_{column}", ["user_name", column])


def _unique_in_store(table: str, column: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(f"uq_{table}_user_name_{column}", table, type_="unique")
        op.create_unique_constraint(f"uq_{table}_{column}", table, [column])
        return
    with op.batch_alter_table(table, recreate="always") as batch:
        batch.drop_constraint(f"uq_{table}_user_name_{column}", type_="unique")
        batch.create_unique_constraint(f"uq_{table}_{column}", [column])


def _unique_on(table: str, columns: list[str]) -> str:
    """The name of the unique constraint on exactly `columns` of `table`."""
    found = sa.inspect(op.get_bind()).get_unique_constraints(table)
    return next(constraint["name"] for constraint in found if constraint["column_names"] == columns)


UNIQUE_PER_USER = (("sessions", "name"), ("facts", "key"), ("roles", "name"))


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _drop_facts_full_text()
    user = _upgrading_user()
    for table in OWNED_TABLES:
        op.add_column(table, sa.Column("user_name", sa.String(200)))
        op.execute(sa.text(f"UPDATE {table} SET user_name = :user").bindparams(user=user))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("user_name", existing_type=sa.String(200), nullable=False)
    for table, column in UNIQUE_PER_USER:
        _unique_per_user(table, column)
    op.drop_index("ix_fact_history_key_id", "fact_history")
    op.create_index("ix_fact_history_user_name_key_id", "fact_history", ["user_name", "key", "id"])
    op.drop_index("ix_model_calls_created_at", "model_calls")
    op.create_index("ix_model_calls_user_name_created_at", "model_calls", ["user_name", "created_at"])
    if sqlite:
        for statement in FACTS_FULL_TEXT:
            op.execute(statement)


def downgrade() -> None:
    """Back to one user per store, which only a store that has had one user
    can go: two users' sessions and facts may share names."""
    import importlib

    bind = op.get_bind()
    for table in OWNED_TABLES:
        found = bind.execute(sa.text(f"SELECT DISTINCT user_name FROM {table} LIMIT 2")).scalars().all()
        if len(found) > 1:
            raise RuntimeError(
                f"{table} holds rows of several users ({', '.join(map(repr, found))}, ...); "
                "schema 0005 has no users, so this store cannot go back to it"
            )
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        _drop_facts_full_text()
    op.drop_index("ix_model_calls_user_name_created_at", "model_calls")
    op.create_index("ix_model_calls_created_at", "model_calls", ["created_at"])
    op.drop_index("ix_fact_history_user_name_key_id", "fact_history")
    op.create_index("ix_fact_history_key_id", "fact_history", ["key", "id"])
    for table, column in UNIQUE_PER_USER:
        _unique_in_store(table, column)
    for table in OWNED_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("user_name")
    if sqlite:
        analyzer = importlib.import_module("kvchat.migrations.versions.0002_own_analyzer")
        for statement in analyzer._facts_full_text(analyzer.NEW_TOKENIZER, "kvchat_index_key"):
            op.execute(statement)
        op.execute("CREATE VIRTUAL TABLE facts_terms USING fts5vocab(facts_fts, 'row')")
