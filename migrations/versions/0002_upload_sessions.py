"""Upload sessions: files arriving in parts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=False),
        sa.Column("mime_type", sa.String(255)),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(80)),
        sa.Column("chunk_size", sa.Integer, nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("storage_upload_id", sa.String(1024), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("media_id", sa.String(36)),
        sa.Column("failure_reason", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("completed_at", sa.DateTime),
    )
    op.create_index(
        "ix_upload_sessions_status_updated", "upload_sessions", ["status", "updated_at"]
    )
    op.create_index("ix_upload_sessions_user_created", "upload_sessions", ["user_id", "created_at"])
    op.create_table(
        "upload_parts",
        sa.Column(
            "session_id",
            sa.String(36),
            sa.ForeignKey("upload_sessions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.String(128), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("upload_parts")
    op.drop_index("ix_upload_sessions_user_created", table_name="upload_sessions")
    op.drop_index("ix_upload_sessions_status_updated", table_name="upload_sessions")
    op.drop_table("upload_sessions")
