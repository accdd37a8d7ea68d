"""Upload sessions: a file sent in fixed-size parts, verified, and only then a Media record.

PENDING -> UPLOADING -> VERIFYING -> READY | FAILED, or CANCELLED / EXPIRED on the way. Every part
but the last is ``chunkSize`` bytes at an offset that is a multiple of it, so parts may come in
any order, a repeated part replaces itself, and each maps to one S3 multipart part.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.media.access import Caller
from services.media.catalog import MediaCatalog, checksum_of
from services.media.exceptions import (
    Conflict,
    MediaError,
    NotFound,
    PayloadTooLarge,
    ValidationError,
)
from services.media.ids import isoformat_z, utcnow, uuid7
from services.media.ingest import check_policy, max_base64_length
from services.media.models import Media, UploadPart, UploadSession
from services.media.outbox import record_event
from services.media.sniffing import SNIFF_BYTES, media_type_of, sniff
from storage import PartInfo, StoredObject, new_key
from storage.errors import ObjectNotFound

log = logging.getLogger(__name__)

PENDING, UPLOADING, VERIFYING = "PENDING", "UPLOADING", "VERIFYING"
READY, FAILED, CANCELLED, EXPIRED = "READY", "FAILED", "CANCELLED", "EXPIRED"
OPEN = (PENDING, UPLOADING)
# A completion that died half-way is idle too; its assembled bytes are the sweeper's then.
EXPIRABLE = (*OPEN, VERIFYING)
SPEED_WINDOW = timedelta(seconds=30)


class Uploads:
    def __init__(self, catalog: MediaCatalog) -> None:
        self.catalog = catalog
        self.sessions = catalog.sessions
        self.storage = catalog.storage
        self.settings = catalog.settings

    # -- starting ---------------------------------------------------------------------------

    def initiate(self, caller: Caller, data: dict[str, Any]) -> UploadSession:
        self.catalog.check_acting_for(caller, data["user_id"])
        self._check_declared_size(data["size"], data.get("mime_type"))
        key = new_key()
        content_type = data.get("mime_type") or "application/octet-stream"
        upload_id = self.catalog.storage_io(self.storage.begin_parts, key, content_type)
        now = utcnow()
        params = {
            name: data[name]
            for name in (
                "entity_type",
                "entity_id",
                "is_public",
                "metadata",
                "folder",
                "tags",
                "alt_text",
                "caption",
            )
            if name in data
        }
        upload = UploadSession(
            id=uuid7(),
            user_id=data["user_id"],
            status=PENDING,
            original_name=data["original_name"],
            mime_type=data.get("mime_type"),
            size=data["size"],
            checksum=data.get("checksum"),
            chunk_size=self.settings.upload_chunk_size,
            storage_key=key,
            storage_upload_id=upload_id,
            params=params,
            created_at=now,
            updated_at=now,
        )
        with self.sessions.begin() as session:
            session.add(upload)
        return upload

    def _check_declared_size(self, size: int, declared_mime: str | None) -> None:
        """The type is only known from the bytes at the end; refuse what no type could accept."""
        rules = self.settings.upload_policy
        if declared_mime and media_type_of(declared_mime) in rules:
            limit = rules[media_type_of(declared_mime)].max_bytes
        else:
            limit = max((rule.max_bytes for rule in rules.values()), default=0)
        if size > limit:
            raise PayloadTooLarge(
                f"files of that type may be at most {limit} bytes; {size} declared"
            )

    # -- parts ------------------------------------------------------------------------------

    def put_part(self, caller: Caller, upload_id: str, offset: Any, content: Any) -> dict[str, Any]:
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValidationError.for_field("offset", "Must be a whole number of bytes, 0 or more.")
        if not isinstance(content, str) or not content:
            raise ValidationError.for_field("content", "Must be a non-empty base64 string.")
        with self.sessions() as session:
            upload = self._get(session, caller, upload_id)
        self._check_open(upload)
        chunk = upload.chunk_size
        if len(content) > max_base64_length(chunk):
            raise PayloadTooLarge(f"a part may be at most chunkSize ({chunk}) bytes")
        if offset % chunk:
            raise ValidationError.for_field(
                "offset", f"Must be a multiple of chunkSize ({chunk}); got {offset}."
            )
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError.for_field("content", "Not valid base64.") from None
        end = offset + len(data)
        if end > upload.size:
            raise PayloadTooLarge(
                f"the part ends at byte {end}, past the declared size of {upload.size} bytes"
            )
        if len(data) != chunk and end != upload.size:
            raise ValidationError.for_field(
                "content", f"Every part but the last must be chunkSize ({chunk}) bytes."
            )
        number = offset // chunk + 1
        part = self.catalog.storage_io(
            self.storage.put_part, upload.storage_key, upload.storage_upload_id, number, data
        )
        now = utcnow()
        with self.sessions.begin() as session:
            upload = self._get(session, caller, upload_id, for_update=True)
            self._check_open(upload)  # cancelled or expired while the part was being stored
            session.merge(
                UploadPart(
                    session_id=upload.id,
                    number=number,
                    size=part.size,
                    etag=part.etag,
                    received_at=now,
                )
            )
            upload.status = UPLOADING
            upload.updated_at = now
        return self.progress(caller, upload_id)

    # -- progress ---------------------------------------------------------------------------

    def progress(self, caller: Caller, upload_id: str) -> dict[str, Any]:
        now = utcnow()
        with self.sessions() as session:
            upload = self._get(session, caller, upload_id)
            received = session.scalar(
                select(func.coalesce(func.sum(UploadPart.size), 0)).where(
                    UploadPart.session_id == upload.id
                )
            )
            recent = session.execute(
                select(func.sum(UploadPart.size), func.min(UploadPart.received_at)).where(
                    UploadPart.session_id == upload.id,
                    UploadPart.received_at >= now - SPEED_WINDOW,
                )
            ).one()
        received = int(received or 0)
        speed = 0.0
        if recent[0]:
            elapsed = max((now - recent[1]).total_seconds(), 1.0)
            speed = int(recent[0]) / elapsed
        done = upload.status == READY
        remaining = None
        if upload.status in OPEN and speed > 0:
            remaining = round((upload.size - received) / speed, 1)
        percent = 100.0 if done else min(99.9, math.floor(received * 1000 / upload.size) / 10)
        return {
            "uploadId": upload.id,
            "status": upload.status,
            "bytesUploaded": upload.size if done else received,
            "totalBytes": upload.size,
            "percentComplete": percent,
            "speed": round(speed, 1),
            "remainingTime": remaining,
            "chunkSize": upload.chunk_size,
            "startedAt": isoformat_z(upload.created_at),
            "updatedAt": isoformat_z(upload.updated_at),
            "completedAt": isoformat_z(upload.completed_at),
            "expiresAt": isoformat_z(self.expires_at(upload)),
            "mediaId": upload.media_id,
            "failureReason": upload.failure_reason,
        }

    def expires_at(self, upload: UploadSession) -> datetime | None:
        return upload.updated_at + self.settings.upload_idle if upload.status in OPEN else None

    # -- completing -------------------------------------------------------------------------

    def complete(self, caller: Caller, upload_id: str) -> Media:
        with self.sessions() as session:
            upload = self._get(session, caller, upload_id)
            if upload.status == READY:
                media = session.get(Media, upload.media_id)
                if media is None:
                    raise NotFound(f"the media of upload {upload_id!r} is purged")
                return media
            self._check_open(upload, allow_verifying=True)
            parts = list(
                session.scalars(
                    select(UploadPart)
                    .where(UploadPart.session_id == upload.id)
                    .order_by(UploadPart.number)
                )
            )
        expected = math.ceil(upload.size / upload.chunk_size)
        missing = sorted(set(range(1, expected + 1)) - {part.number for part in parts})
        if missing:
            offsets = [(number - 1) * upload.chunk_size for number in missing[:10]]
            raise Conflict(f"parts are missing at offsets {offsets}; send them, then complete")
        self._set_status(upload.id, VERIFYING)
        stored = self._assemble(upload, parts)
        try:
            head = self.catalog.storage_io(self.storage.read_head, stored.key, SNIFF_BYTES)
            sniffed = sniff(head)
            check_policy(sniffed, stored.size, upload.mime_type, self.settings)
            if upload.checksum and stored.checksum != upload.checksum:
                raise Conflict(
                    f"the bytes received have checksum {stored.checksum}, not the declared "
                    f"{upload.checksum}"
                )
        except MediaError as exc:
            self.catalog.discard_object(stored.key)
            self._set_status(upload.id, FAILED, reason=str(exc))
            raise
        data = {
            **upload.params,
            "user_id": upload.user_id,
            "original_name": upload.original_name,
        }

        def mark_ready(session: Session) -> None:
            row = session.get(UploadSession, upload.id)
            assert row is not None
            row.status = READY
            row.media_id = media.id
            row.completed_at = row.updated_at = utcnow()

        media = self.catalog.new_media(
            data,
            storage_key=stored.key,
            type=sniffed.media_type.value,
            mime_type=sniffed.mime_type,
            size=stored.size,
            checksum=stored.checksum,
        )
        # The assembled object is kept if this commit fails: a retried completion reuses it.
        return self.catalog.commit_new(media, None, written_key=None, also=mark_ready)

    def _assemble(self, upload: UploadSession, parts: list[UploadPart]) -> StoredObject:
        infos = [PartInfo(part.number, part.size, part.etag) for part in parts]
        try:
            return self.catalog.storage_io(
                self.storage.complete_parts, upload.storage_key, upload.storage_upload_id, infos
            )
        except ObjectNotFound:
            # A completion that died after assembling: the parts are gone, the object is there.
            if not self.catalog.storage_io(self.storage.exists, upload.storage_key):
                raise
            checksum = self.catalog.storage_io(checksum_of, self.storage, upload.storage_key)
            return StoredObject(upload.storage_key, upload.size, checksum)

    # -- cancelling and expiring ------------------------------------------------------------

    def cancel(self, caller: Caller, upload_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            upload = self._get(session, caller, upload_id)
        if upload.status == CANCELLED:
            return self.progress(caller, upload_id)
        if upload.status not in OPEN:
            raise Conflict(f"upload {upload_id!r} is {upload.status} and cannot be cancelled")
        self.catalog.storage_io(
            self.storage.abort_parts, upload.storage_key, upload.storage_upload_id
        )
        with self.catalog.changing() as session:
            row = self._get(session, caller, upload_id, for_update=True)
            row.status = CANCELLED
            row.updated_at = utcnow()
            session.flush()
            event_id = record_event(session, "upload_cancelled", upload=self._summary(row))
            self.catalog.recorded_events.append(event_id)
        return self.progress(caller, upload_id)

    def expire_idle(self, limit: int = 100) -> int:
        """Discard the parts of sessions nobody has touched for the idle period."""
        cutoff = utcnow() - self.settings.upload_idle
        with self.sessions() as session:
            idle = list(
                session.scalars(
                    select(UploadSession)
                    .where(UploadSession.status.in_(EXPIRABLE), UploadSession.updated_at < cutoff)
                    .limit(limit)
                )
            )
        for upload in idle:
            self.catalog.storage_io(
                self.storage.abort_parts, upload.storage_key, upload.storage_upload_id
            )
            with self.sessions.begin() as session:
                row = session.get(UploadSession, upload.id, with_for_update=True)
                if row is not None and row.status in EXPIRABLE and row.updated_at < cutoff:
                    row.status = EXPIRED
                    row.updated_at = utcnow()
        if idle:
            log.info("expired %d idle upload sessions and discarded their parts", len(idle))
        return len(idle)

    # -- helpers ----------------------------------------------------------------------------

    def _get(
        self, session: Session, caller: Caller, upload_id: str, for_update: bool = False
    ) -> UploadSession:
        statement = select(UploadSession).where(UploadSession.id == upload_id)
        if for_update:
            statement = statement.with_for_update()
        upload = session.scalar(statement)
        if upload is None or not caller.owns(upload.user_id):
            raise NotFound(f"upload {upload_id!r} not found")
        return upload

    @staticmethod
    def _check_open(upload: UploadSession, allow_verifying: bool = False) -> None:
        if upload.status in OPEN or (allow_verifying and upload.status == VERIFYING):
            return
        raise Conflict(f"upload {upload.id!r} is {upload.status}; it takes no more parts")

    def _set_status(self, upload_id: str, status: str, reason: str | None = None) -> None:
        with self.sessions.begin() as session:
            row = session.get(UploadSession, upload_id, with_for_update=True)
            assert row is not None
            row.status = status
            row.failure_reason = reason
            row.updated_at = utcnow()

    @staticmethod
    def _summary(upload: UploadSession) -> dict[str, Any]:
        return {
            "uploadId": upload.id,
            "userId": upload.user_id,
            "status": upload.status,
            "originalName": upload.original_name,
            "totalBytes": upload.size,
        }
