"""What issue 16 added: a paper's TL;DR, worked out once when its abstract is stored.

Papers stored before stay without one (NULL) and have it worked out when shown, as before; a
paper whose abstract changes gets it anew at ingest.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 08:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('paper', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tldr', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('paper', schema=None) as batch_op:
        batch_op.drop_column('tldr')
