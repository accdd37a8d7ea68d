"""Upload sessions remember the request that started them.

A redelivered ``initiateUpload`` message (the AMQP correlation id) or a caller's
``idempotencyKey`` finds the session the first request started instead of starting another.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.add_column(sa.Column("request_kind", sa.String(16)))
        batch.add_column(sa.Column("request_key", sa.String(255)))
        batch.add_column(sa.Column("request_hash", sa.String(64)))
        batch.create_index(
            "uq_upload_sessions_request",
            ["user_id", "request_kind", "request_key"],
            unique=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.drop_index("uq_upload_sessions_request")
        batch.drop_column("request_hash")
        batch.drop_column("request_key")
        batch.drop_column("request_kind")
