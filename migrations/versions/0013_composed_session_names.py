"""Session names in Unicode's composed form (NFC).

From this revision kvchat stores and looks up session names composed, so
"café" typed and "café" from a macOS file name (e + a combining accent) are
one session. Names stored before keep whatever form they were typed in;
this puts them in the composed form too, or a name typed composed would
never find them. A name whose composed form another session of the same
user already has is left as it is, and is then reached by its id ('#N'):
two sessions are never merged behind the user's back.

The way down leaves the names composed: which were not is not recorded.

Revision ID: 0013
Revises: 0012
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, user_name, name FROM sessions")).all()
    taken = {(row.user_name, row.name) for row in rows}
    for row in rows:
        composed = unicodedata.normalize("NFC", row.name)
        if composed == row.name or (row.user_name, composed) in taken:
            continue
        connection.execute(sa.text("UPDATE sessions SET name = :name WHERE id = :id"), dict(name=composed, id=row.id))
        taken.discard((row.user_name, row.name))
        taken.add((row.user_name, composed))


def downgrade() -> None:
    pass
