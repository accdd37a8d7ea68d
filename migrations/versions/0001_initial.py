"""Media records, tags, idempotency keys and the event outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=False),
        sa.Column("mime_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(80)),
        sa.Column("storage_key", sa.String(512), unique=True),
        sa.Column("external_url", sa.Text),
        sa.Column("user_id", sa.String(255)),
        sa.Column("entity_type", sa.String(64)),
        sa.Column("entity_id", sa.String(255)),
        sa.Column("is_public", sa.Boolean, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("folder", sa.String(1024)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("alt_text", sa.Text),
        sa.Column("caption", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("deleted_at", sa.DateTime),
        sa.CheckConstraint(
            "(entity_type IS NULL) = (entity_id IS NULL)", name="ck_media_entity_pair"
        ),
    )
    for name, columns in [
        ("ix_media_created", ["created_at", "id"]),
        ("ix_media_size", ["size", "id"]),
        ("ix_media_name", ["original_name", "id"]),
        ("ix_media_user_created", ["user_id", "created_at", "id"]),
        ("ix_media_entity_created", ["entity_type", "entity_id", "created_at", "id"]),
        ("ix_media_type_created", ["type", "created_at", "id"]),
        ("ix_media_mime_created", ["mime_type", "created_at", "id"]),
        ("ix_media_status_created", ["status", "created_at", "id"]),
        ("ix_media_public_created", ["is_public", "created_at", "id"]),
        ("ix_media_folder_created", ["folder", "created_at", "id"]),
        ("ix_media_deleted", ["deleted_at"]),
    ]:
        op.create_index(name, "media", columns)

    op.create_table(
        "media_tags",
        sa.Column(
            "media_id",
            sa.String(36),
            sa.ForeignKey("media.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("ix_media_tags_tag", "media_tags", ["tag", "media_id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("scope", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("media_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index(
        "ix_idempotency_kind_created", "idempotency_keys", ["kind", "created_at"]
    )

    op.create_table(
        "outbox_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("published_at", sa.DateTime),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_outbox_pending", "outbox_events", ["published_at", "created_at"])


def downgrade() -> None:
    op.drop_table("outbox_events")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_media_tags_tag", table_name="media_tags")
    op.drop_table("media_tags")
    op.drop_table("media")
