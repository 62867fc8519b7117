"""Session titles, and the tokens of every model call.

- sessions.title: a title the user set, or one made from the session's first
  question (kvchat.titles, no model call). Existing sessions get theirs from
  their first question here.
- model_calls: one row per model request (an answer, a fact extraction, a
  summary update, an embeddings batch) with its tokens in and out, whether
  the server reported them or kvchat counted them, its session and time, for
  `kvchat usage`. Answers stored before this table existed are copied in from
  their turns (which have always kept their usage), with `reported` NULL:
  which of them the server reported was not recorded. Extraction, summary and
  embedding calls before it left no trace and cannot be recovered.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _title_existing_sessions() -> None:
    from kvchat.titles import title_from_question

    bind = op.get_bind()
    first_questions = bind.execute(sa.text(
        "SELECT turns.session_id, substr(turns.content, 1, 4000) FROM turns "
        "JOIN (SELECT session_id, min(id) AS id FROM turns WHERE role = 'user' GROUP BY session_id) AS first "
        "ON first.id = turns.id"
    )).all()
    titles = [
        {"id": session_id, "title": title}
        for session_id, question in first_questions
        if (title := title_from_question(question)) is not None
    ]
    if titles:
        bind.execute(sa.text("UPDATE sessions SET title = :title WHERE id = :id"), titles)


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("title", sa.String(200)))
    op.create_table(
        "model_calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id", ondelete="SET NULL")),
        sa.Column("model", sa.String(200)),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("reported", sa.Boolean),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('answer', 'extract', 'summary', 'embed')", name="model_call_kind"),
    )
    op.create_index("ix_model_calls_created_at", "model_calls", ["created_at"])
    op.create_index("ix_model_calls_session_id", "model_calls", ["session_id"])
    op.execute(
        "INSERT INTO model_calls (kind, session_id, model, prompt_tokens, completion_tokens, reported, created_at) "
        "SELECT 'answer', session_id, model, coalesce(prompt_tokens, 0), coalesce(completion_tokens, 0), NULL, "
        "created_at FROM turns WHERE role = 'assistant' "
        "AND (prompt_tokens IS NOT NULL OR completion_tokens IS NOT NULL) ORDER BY id"
    )
    _title_existing_sessions()


def downgrade() -> None:
    op.drop_index("ix_model_calls_session_id", "model_calls")
    op.drop_index("ix_model_calls_created_at", "model_calls")
    op.drop_table("model_calls")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("title")
