"""What issue 16 added: a paper's words as the text model reads them, worked out once when its
text is stored (`textmodel.stored_tokens`).

Papers stored before stay without them (NULL) and are tokenized when a text model is fitted, as
before; a paper whose title, abstract or authors change gets them anew at ingest.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 08:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('paper', schema=None) as batch_op:
        batch_op.add_column(sa.Column('terms', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('paper', schema=None) as batch_op:
        batch_op.drop_column('terms')
