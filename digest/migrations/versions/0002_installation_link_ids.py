"""What issue 12 added: this installation's identity (`installation`) and a link id per
subscriber (`subscriber.link_id`), filled in for the subscribers that exist.

The `installation` row records the largest digest and item ids at the upgrade: links mailed
before it (signed by the key alone) stay valid for those and for nothing newer (see
`digest.links`). An empty database records none.

Revision ID: 0002
Revises: 0001
"""

import datetime as dt
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installation",
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("legacy_digest_max", sa.Integer(), nullable=False),
        sa.Column("legacy_item_max", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("slot"),
    )
    with op.batch_alter_table("subscriber") as batch:
        batch.add_column(sa.Column("link_id", sa.String(length=32), nullable=True))
    bind = op.get_bind()
    subscribers = bind.execute(sa.text("SELECT id FROM subscriber")).scalars().all()
    if subscribers:
        bind.execute(sa.text("UPDATE subscriber SET link_id = :link WHERE id = :id"), [{"id": i, "link": secrets.token_hex(8)} for i in subscribers])
    digest_max = bind.execute(sa.text("SELECT max(id) FROM digest")).scalar() or 0
    item_max = bind.execute(sa.text("SELECT max(id) FROM digestitem")).scalar() or 0
    if digest_max or item_max:  # an empty database gets its row at first start (`db.ensure_installation`)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        bind.execute(
            sa.text("INSERT INTO installation (slot, id, created_at, legacy_digest_max, legacy_item_max) VALUES (1, :id, :now, :digests, :items)"),
            {"id": secrets.token_urlsafe(16), "now": now, "digests": digest_max, "items": item_max},
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriber") as batch:
        batch.drop_column("link_id")
    op.drop_table("installation")
