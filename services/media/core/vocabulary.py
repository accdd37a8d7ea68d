"""The words the service and its callers share, each written once: statuses, media types and
event names. Everything else (models, schemas, domain code, docs tests) takes them from here.

They are ``StrEnum``s: a member is its string, so it is stored, compared and sent on the wire
as the plain name callers see.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class MediaStatus(StrEnum):
    """Where a media record is in its life (``status`` on the wire)."""

    PROCESSING = "PROCESSING"
    READY = "READY"
    FAILED = "FAILED"
    DELETED = "DELETED"


# Whose bytes the file endpoint serves: processing does not hold the original back.
SERVABLE: Final = (MediaStatus.READY, MediaStatus.PROCESSING)


class UploadStatus(StrEnum):
    """An upload session: PENDING -> UPLOADING -> VERIFYING -> READY | FAILED, or CANCELLED /
    EXPIRED on the way."""

    PENDING = "PENDING"
    UPLOADING = "UPLOADING"
    VERIFYING = "VERIFYING"
    READY = "READY"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


# Sessions that still take bytes.
UPLOAD_OPEN: Final = (UploadStatus.PENDING, UploadStatus.UPLOADING)
# A completion that died half-way is idle too; what it assembled belongs to the session meanwhile.
UPLOAD_EXPIRABLE: Final = (*UPLOAD_OPEN, UploadStatus.VERIFYING)


class MediaType(StrEnum):
    """The family a MIME type belongs to (``type`` on the wire)."""

    IMAGE = "IMAGE"
    VIDEO = "VIDEO"
    AUDIO = "AUDIO"
    DOCUMENT = "DOCUMENT"
    OTHER = "OTHER"


class MediaEvent(StrEnum):
    """The events of the ``media`` service, as subscribers name them in ``@event_handler``."""

    CREATED = "media_created"
    UPDATED = "media_updated"
    REMOVED = "media_removed"
    RESTORED = "media_restored"
    PURGED = "media_purged"
    PROCESSED = "media_processed"
    PROCESSING_FAILED = "media_processing_failed"


class UploadEvent(StrEnum):
    """Events of upload sessions."""

    CANCELLED = "upload_cancelled"
