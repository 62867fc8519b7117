"""Which tiktoken encoding counted a turn's tokens.

A turn's token count is made once, when it is written, for the model of the
moment, and the recent window trusts it from then on. The same text can
count very differently under another encoding: o200k_base counts some
Chinese and Hindi text at under half of what cl100k_base does. A session
carried on with gpt-4 (cl100k_base, an 8,192-token context) after gpt-4o
(o200k_base) was given a window that could hold more than twice the tokens
it was meant to, and the request failed as too long. With the encoding kept
beside the count, a count made by another encoding is made again.

Turns written before this revision keep NULL: the encoding that counted them
is not known, and their counts are trusted as before.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


# A plain ALTER TABLE on both engines (SQLite has dropped columns since
# 3.35): rebuilding turns would take its search triggers with it, and copy
# every turn of a large store.
def upgrade() -> None:
    op.add_column("turns", sa.Column("token_encoding", sa.String(32)))


def downgrade() -> None:
    op.drop_column("turns", "token_encoding")
