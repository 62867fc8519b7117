"""The tables, as SQLAlchemy Core sees them.

The schema itself is created and changed only by the Alembic migrations in
`migrations/`; these definitions are how the code reads and writes it, and a
test checks that the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Whose row it is (see kvchat.users): sessions, facts and their history,
# skipped facts, roles and model calls. Turns, summaries and vectors belong to
# a session or a fact, and through it to its user.
def _user_name() -> Column:
    return Column("user_name", String(200), nullable=False)


TURN_ROLES = ("system", "user", "assistant")

# complete: an ordinary turn. pending: a question whose answer is on its way.
# unanswered: a question whose answer failed. interrupted: a partial answer
# (stream cut, Ctrl-C). length: an answer cut by the token limit.
TURN_STATUSES = ("complete", "pending", "unanswered", "interrupted", "length")

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    _user_name(),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_active_at", DateTime(timezone=True), nullable=False),
    Column("turn_count", Integer, nullable=False, server_default="0"),
    Column("token_count", Integer, nullable=False, server_default="0"),
    Column("settings", Text),  # JSON: memory strategy and sizes, role, model
    Column("title", String(200)),  # set by the user, else made from the first question
    UniqueConstraint("user_name", "name", name="uq_sessions_user_name_name"),
)

turns = Table(
    "turns",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "session_id",
        Integer,
        ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("role", String(16), nullable=False),
    Column("name", String(200)),
    Column("content", Text, nullable=False),
    Column("tokens", Integer, nullable=False),
    # The tiktoken encoding that made `tokens`; NULL before schema 0011.
    Column("token_encoding", String(32)),
    Column("model", String(200)),
    Column("status", String(16), nullable=False, server_default="complete"),
    Column("error", Text),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("ref", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("role IN ('system', 'user', 'assistant')", name="turn_role"),
    CheckConstraint(
        "status IN ('complete', 'pending', 'unanswered', 'interrupted', 'length')",
        name="turn_status",
    ),
    Index("ix_turns_session_id_id", "session_id", "id"),
)

facts = Table(
    "facts",
    metadata,
    Column("id", Integer, primary_key=True),
    _user_name(),
    Column("key", String(200), nullable=False),
    Column("value", Text, nullable=False),
    Column("turn_id", Integer, ForeignKey("turns.id", ondelete="SET NULL")),
    Column("source", String(16), nullable=False),
    Column("ref", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("user_name", "key", name="uq_facts_user_name_key"),
    Index("ix_facts_turn_id", "turn_id"),  # deleting a turn finds its facts (migration 0009)
)

# Every value a key has had, and its removal: the fact's audit trail. Keyed by
# the key's text, so the trail outlives a forgotten fact.
fact_history = Table(
    "fact_history",
    metadata,
    Column("id", Integer, primary_key=True),
    _user_name(),
    Column("key", String(200), nullable=False),
    Column("value", Text),
    Column("action", String(16), nullable=False),
    Column("turn_id", Integer, ForeignKey("turns.id", ondelete="SET NULL")),
    Column("source", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("action IN ('set', 'forget')", name="fact_history_action"),
    Index("ix_fact_history_user_name_key_id", "user_name", "key", "id"),
    Index("ix_fact_history_turn_id", "turn_id"),
)

# The rolling summary of a session's turns up to and including last_turn_id.
session_summaries = Table(
    "session_summaries",
    metadata,
    Column("session_id", Integer, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("content", Text, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("last_turn_id", Integer, nullable=False),
    Column("turn_count", Integer, nullable=False),  # how many turns it has folded in
    Column("model", String(200)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# System-role texts added by users; the built-in roles are in kvchat.roles.
roles = Table(
    "roles",
    metadata,
    Column("id", Integer, primary_key=True),
    _user_name(),
    Column("name", String(200), nullable=False),
    Column("content", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("user_name", "name", name="uq_roles_user_name_name"),
)

# Vectors from the embeddings endpoint: float32, unit length, for the text
# whose SHA-256 is `digest` (a changed fact gets a new vector).
embeddings = Table(
    "embeddings",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("item_id", Integer, primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("dimensions", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    CheckConstraint("kind IN ('fact', 'turn')", name="embedding_kind"),
)

# Facts left out because they looked like secrets: the key they would have had
# (NULL when the key itself looked like one) and what the secret looked like,
# never the value, so `kvchat facts --skipped` can show what was not learned.
skipped_facts = Table(
    "skipped_facts",
    metadata,
    Column("id", Integer, primary_key=True),
    _user_name(),
    Column("key", String(200)),
    Column("reason", String(200), nullable=False),
    Column("source", String(16), nullable=False),
    Column("turn_id", Integer, ForeignKey("turns.id", ondelete="SET NULL")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_skipped_facts_turn_id", "turn_id"),
)

MODEL_CALL_KINDS = ("answer", "extract", "summary", "embed")

# The tokens every model call cost: answers, fact extraction, summaries and
# embeddings, as the server reported them (`reported` true) or as kvchat
# counted them with tiktoken when it did not (false); NULL for answers stored
# before this table existed, whose source was not kept. A deleted session's
# calls stay, without their session: the tokens were spent all the same.
model_calls = Table(
    "model_calls",
    metadata,
    Column("id", Integer, primary_key=True),
    _user_name(),
    Column("kind", String(16), nullable=False),
    Column("session_id", Integer, ForeignKey("sessions.id", ondelete="SET NULL")),
    Column("model", String(200)),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("reported", Boolean),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('answer', 'extract', 'summary', 'embed')", name="model_call_kind"),
    Index("ix_model_calls_user_name_created_at", "user_name", "created_at"),
    Index("ix_model_calls_session_id", "session_id"),
)
