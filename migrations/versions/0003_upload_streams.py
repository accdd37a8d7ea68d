"""Upload sessions fed by streams (tus) and straight to the bucket.

A stream's bytes past the last whole part are kept as a side object (``tail_key``) between
requests; ``append_seq`` lets two requests racing on one session find out; ``transfer`` says
whether the bytes come through the service or straight to the bucket.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.add_column(sa.Column("tail_key", sa.String(512)))
        batch.add_column(
            sa.Column("tail_size", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("append_seq", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("transfer", sa.String(16), nullable=False, server_default="service")
        )


def downgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.drop_column("transfer")
        batch.drop_column("append_seq")
        batch.drop_column("tail_size")
        batch.drop_column("tail_key")
