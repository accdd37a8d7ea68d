"""SQLAlchemy models. The schema itself is owned by the Alembic migrations in ``migrations/``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Media(Base):
    __tablename__ = "media"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    original_name: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(80))
    storage_key: Mapped[str | None] = mapped_column(String(512), unique=True)
    external_url: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(255))
    entity_type: Mapped[str | None] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(255))
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    # "metadata" is reserved on declarative classes; the column keeps the wire name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    folder: Mapped[str | None] = mapped_column(String(1024))
    alt_text: Mapped[str | None] = mapped_column(Text)
    caption: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Which request message (AMQP correlation id) made the record as it is: a hash of that id
    # and the updatedAt it set. A redelivery of it carries a stale expectedUpdatedAt and must
    # not be taken for a conflict; any later change moves updatedAt and so voids the mark.
    updated_by_delivery: Mapped[str | None] = mapped_column(String(64))

    # Tags are read from this column (no second query per page) and filtered through the
    # indexed media_tags rows; MediaCatalog writes both together.
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    tag_rows: Mapped[list[MediaTag]] = relationship(
        back_populates="media", cascade="all, delete-orphan", lazy="select"
    )

    # Facts extracted by processing (image, video, audio, document), and why there are none.
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    processing_error: Mapped[str | None] = mapped_column(Text)
    # The processing job lives on the row: whoever holds an unexpired claim works on it; a
    # worker that dies lets its lease run out and the job is claimed again.
    processing_claim: Mapped[str | None] = mapped_column(String(36))
    processing_lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    processing_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Variants are read from this column (no second query per page) and owned through the
    # media_variants rows (unique storage keys, for the sweeper and purge); both are written
    # together by the processing code.
    variant_list: Mapped[list[dict[str, Any]] | None] = mapped_column("variants", JSON)
    variant_rows: Mapped[list[MediaVariant]] = relationship(
        back_populates="media", cascade="all, delete-orphan", lazy="select"
    )

    @property
    def variants(self) -> list[StoredVariant]:
        return [StoredVariant.from_json(item) for item in self.variant_list or ()]

    # Optimistic concurrency on every ORM update: UPDATE ... WHERE id = ? AND updated_at = <read>.
    # A row changed by someone else since it was read fails the update (StaleDataError) instead of
    # being overwritten, on SQLite (which ignores FOR UPDATE) as on PostgreSQL. updated_at is set
    # by the catalog on every change, so no generator is needed.
    __mapper_args__ = {"version_id_col": updated_at, "version_id_generator": False}

    __table_args__ = (
        Index("ix_media_created", "created_at", "id"),
        Index("ix_media_size", "size", "id"),
        Index("ix_media_name", "original_name", "id"),
        Index("ix_media_user_created", "user_id", "created_at", "id"),
        Index("ix_media_entity_created", "entity_type", "entity_id", "created_at", "id"),
        Index("ix_media_type_created", "type", "created_at", "id"),
        Index("ix_media_mime_created", "mime_type", "created_at", "id"),
        Index("ix_media_status_created", "status", "created_at", "id"),
        Index("ix_media_public_created", "is_public", "created_at", "id"),
        Index("ix_media_folder_created", "folder", "created_at", "id"),
        Index("ix_media_deleted", "deleted_at"),
    )


class MediaVariant(Base):
    """A rendition of a media's bytes: a preset size, an ad-hoc resize or crop, a re-encode, or
    the poster frame of a video and the first page of a PDF."""

    __tablename__ = "media_variants"

    media_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("media.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The recipe the bytes were made with: a changed recipe (or its version) makes them stale.
    fingerprint: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(512), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    media: Mapped[Media] = relationship(back_populates="variant_rows")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "mimeType": self.mime_type,
            "size": self.size,
            "storageKey": self.storage_key,
            "createdAt": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class StoredVariant:
    """A variant as the media row lists it."""

    name: str
    fingerprint: str
    width: int
    height: int
    format: str
    mime_type: str
    size: int
    storage_key: str
    created_at: datetime

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> StoredVariant:
        return cls(
            name=item["name"],
            fingerprint=item["fingerprint"],
            width=item["width"],
            height=item["height"],
            format=item["format"],
            mime_type=item["mimeType"],
            size=item["size"],
            storage_key=item["storageKey"],
            created_at=datetime.fromisoformat(item["createdAt"]),
        )


class MediaTag(Base):
    __tablename__ = "media_tags"

    media_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("media.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)

    media: Mapped[Media] = relationship(back_populates="tag_rows")

    __table_args__ = (Index("ix_media_tags_tag", "tag", "media_id"),)


class IdempotencyKey(Base):
    """First result of a creating request, per owner.

    ``kind`` is ``caller`` for a caller's ``idempotencyKey`` and ``delivery`` for the AMQP
    correlation id of the request message, so a redelivered message is answered, not redone.
    """

    __tablename__ = "idempotency_keys"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    media_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_idempotency_kind_created", "kind", "created_at"),)


class OutboxEvent(Base):
    """An event written in the same transaction as the change it reports; a relay publishes it."""

    __tablename__ = "outbox_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    published_at: Mapped[datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_outbox_pending", "published_at", "created_at"),)


class UploadSession(Base):
    """A file arriving in parts; it becomes a Media record only once verified."""

    __tablename__ = "upload_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    original_name: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(80))
    chunk_size: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(512))
    storage_upload_id: Mapped[str] = mapped_column(String(1024))
    # The new media's fields (entity link, visibility, metadata, folder, tags, texts).
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    media_id: Mapped[str | None] = mapped_column(String(36))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Bytes of a stream past the last whole part, kept between requests as their own object.
    tail_key: Mapped[str | None] = mapped_column(String(512))
    tail_size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Bumped by every append, so two requests streaming into one session cannot both win.
    append_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # "service": bytes come through this service; "direct": straight to the bucket (S3).
    transfer: Mapped[str] = mapped_column(String(16), default="service", server_default="service")
    # The request that started the session (as for IdempotencyKey: "caller" with the caller's
    # idempotencyKey, or "delivery" with the request message's id), so a repeat finds it.
    request_kind: Mapped[str | None] = mapped_column(String(16))
    request_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_upload_sessions_status_updated", "status", "updated_at"),
        Index("ix_upload_sessions_user_created", "user_id", "created_at"),
        Index("uq_upload_sessions_request", "user_id", "request_kind", "request_key", unique=True),
    )


class UploadPart(Base):
    __tablename__ = "upload_parts"

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("upload_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(DateTime)
