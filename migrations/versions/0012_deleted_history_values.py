"""A history value deleted with its session is NULL, not a sentinel text.

Deleting a session with its facts blanks the values its turns had set in
`fact_history` (the record that something was set stays). Until this
revision the blank was the text "(deleted with its session)", which
`kvchat facts history --json` gave out as if it were a value, and which a
fact could also hold for real. A `set` row's value is never NULL otherwise
(a stored fact always has one), so NULL says it unambiguously.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_SENTINEL = "(deleted with its session)"


def upgrade() -> None:
    # Only values learnt from a turn (source model or rules) whose turn is
    # gone: the deletion also cut their link to it. A value the user set or
    # imported has no turn either, and may be that very text.
    op.execute(sa.text(
        "UPDATE fact_history SET value = NULL "
        "WHERE action = 'set' AND value = :sentinel AND turn_id IS NULL AND source NOT IN ('user', 'import')"
    ).bindparams(sentinel=_SENTINEL))


def downgrade() -> None:
    op.execute(sa.text(
        "UPDATE fact_history SET value = :sentinel WHERE action = 'set' AND value IS NULL"
    ).bindparams(sentinel=_SENTINEL))
