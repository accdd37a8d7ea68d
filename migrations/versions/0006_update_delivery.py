"""The request message that last changed a media through update.

A redelivered ``update`` with ``expectedUpdatedAt`` finds its own change instead of a conflict.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("media") as batch:
        batch.add_column(sa.Column("updated_by_delivery", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("media") as batch:
        batch.drop_column("updated_by_delivery")
