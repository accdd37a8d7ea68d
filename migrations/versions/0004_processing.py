"""Processing: extracted facts, the processing job on the media row, and variants.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("media") as batch:
        batch.add_column(sa.Column("facts", sa.JSON))
        batch.add_column(sa.Column("variants", sa.JSON))
        batch.add_column(sa.Column("processing_error", sa.Text))
        batch.add_column(sa.Column("processing_claim", sa.String(36)))
        batch.add_column(sa.Column("processing_lease_until", sa.DateTime))
        batch.add_column(
            sa.Column("processing_attempts", sa.Integer, nullable=False, server_default="0")
        )
    op.create_table(
        "media_variants",
        sa.Column(
            "media_id",
            sa.String(36),
            sa.ForeignKey("media.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("mime_type", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("media_variants")
    with op.batch_alter_table("media") as batch:
        batch.drop_column("processing_attempts")
        batch.drop_column("processing_lease_until")
        batch.drop_column("processing_claim")
        batch.drop_column("processing_error")
        batch.drop_column("variants")
        batch.drop_column("facts")
