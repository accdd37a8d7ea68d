"""Upload sessions: a file sent in fixed-size parts, verified, and only then a Media record.

PENDING -> UPLOADING -> VERIFYING -> READY | FAILED, or CANCELLED / EXPIRED on the way. Every part
but the last is ``chunkSize`` bytes at an offset that is a multiple of it, so parts may come in
any order, a repeated part replaces itself, and each maps to one S3 multipart part.

Bytes arrive three ways into the same sessions: parts over RPC (:meth:`Uploads.put_part`), a
stream of any length from the HTTP (tus) side (:meth:`Uploads.append`), whose bytes past the last
whole part are kept as a side object between requests, and straight to an S3 bucket through
presigned URLs (``transfer == "direct"``), which the service only sees at completion.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.media.catalog.records import (
    OverCatalog,
    RequestKey,
    checksum_of,
    request_hash,
)
from services.media.core.identity import INTERNAL, Caller
from services.media.core.ids import isoformat_z, utcnow, uuid7
from services.media.core.models import Media, UploadPart, UploadSession
from services.media.core.vocabulary import UPLOAD_EXPIRABLE, UPLOAD_OPEN, UploadEvent, UploadStatus
from services.media.exceptions import (
    Conflict,
    MediaError,
    NotFound,
    PayloadTooLarge,
    StorageUnavailable,
    ValidationError,
)
from services.media.ingest.policy import check_policy, max_base64_length
from services.media.ingest.sniffing import SNIFF_BYTES, media_type_of, sniff
from services.media.uploads.streams import Appended, StreamedFile, StreamWriter
from storage import DirectUploads, PartInfo, StoredObject, new_key
from storage.errors import ObjectNotFound

log = logging.getLogger(__name__)

SPEED_WINDOW = timedelta(seconds=30)
# Where the bytes go: through the service (RPC parts, tus), or straight to the bucket in parts
# (presigned UploadPart URLs) or whole (a presigned POST, for files of one part).
THROUGH_SERVICE, DIRECT_PARTS, DIRECT_POST = "service", "direct", "direct-post"
SUPPORTED_CHECKSUMS = ("sha256", "sha1", "md5")


class StreamInterrupted(Exception):
    """The client stopped sending in the middle of a request body (dropped, or silent too long)."""


class OffsetMismatch(Conflict):
    """A stream resumed at an offset other than the session's (HTTP only, never over RPC)."""

    def __init__(self, expected: int, given: int) -> None:
        super().__init__(f"the upload is at offset {expected}, not {given}; resume from there")
        self.expected = expected


class ChecksumMismatch(Conflict):
    """A request's bytes do not match the checksum the client sent with them (HTTP only)."""


class Uploads(OverCatalog):
    # -- starting ---------------------------------------------------------------------------

    def initiate(
        self, caller: Caller, data: dict[str, Any], delivery_id: str | None = None
    ) -> UploadSession:
        """A new session; or, for a repeated request (the same ``idempotencyKey``, or the same
        request message delivered again), the session the first one started, as it is now."""
        self.catalog.check_acting_for(caller, data["user_id"])
        request = RequestKey.of(data, delivery_id, request_hash(data, data.get("checksum")))
        first = self._started_by(request)
        if first is not None:
            return first
        self._check_declared_size(data["size"], data.get("mime_type"))
        self.catalog.check_quota(data["user_id"], data["size"])
        transfer = THROUGH_SERVICE
        if data.get("direct"):
            if not isinstance(self.storage, DirectUploads):
                raise ValidationError.for_field(
                    "direct",
                    f"Uploads straight to storage need the S3 backend; this service keeps files "
                    f"on {self.storage.name} storage. Send the bytes over tus or uploadPart.",
                )
            small = data["size"] <= self.settings.upload_chunk_size
            transfer = DIRECT_POST if small else DIRECT_PARTS
        key = new_key()
        content_type = data.get("mime_type") or "application/octet-stream"
        upload_id = ""
        if transfer != DIRECT_POST:
            upload_id = self.catalog.storage_io(
                self.storage.begin_parts, key, content_type, self.settings.upload_chunk_size
            )
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
            status=UploadStatus.PENDING,
            original_name=data["original_name"],
            mime_type=data.get("mime_type"),
            size=data["size"],
            checksum=data.get("checksum"),
            chunk_size=self.settings.upload_chunk_size,
            storage_key=key,
            storage_upload_id=upload_id,
            transfer=transfer,
            params=params,
            created_at=now,
            updated_at=now,
            request_kind=request.kind if request else None,
            request_key=request.key if request else None,
            request_hash=request.request_hash if request else None,
        )
        try:
            with self.sessions.begin() as session:
                session.add(upload)
        except IntegrityError:
            # Two deliveries of one request raced and the other committed first: its session
            # is the answer, and what this one staged goes.
            first = self._started_by(request)
            if first is None:
                raise
            self._discard_bytes(upload)
            return first
        return upload

    def _started_by(self, request: RequestKey | None) -> UploadSession | None:
        if request is None:
            return None
        with self.sessions() as session:
            upload = session.scalar(
                select(UploadSession).where(
                    UploadSession.user_id == request.scope,
                    UploadSession.request_kind == request.kind,
                    UploadSession.request_key == request.key,
                )
            )
        if upload is not None and upload.request_hash != request.request_hash:
            raise Conflict(f"{request.label} was already used with a different request")
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
        if upload.transfer != THROUGH_SERVICE:
            raise Conflict(f"upload {upload_id!r} goes straight to storage; send its parts there")
        if upload.tail_size:
            raise Conflict(
                f"upload {upload_id!r} is being streamed over HTTP (tus); continue it there"
            )
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
            upload.status = UploadStatus.UPLOADING
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
        received = int(received or 0) + upload.tail_size
        if upload.transfer == DIRECT_PARTS and upload.status in UPLOAD_OPEN:
            # The bytes went to the bucket; only the bucket knows how many arrived.
            parts = self.catalog.storage_io(
                self._direct_storage().list_parts, upload.storage_key, upload.storage_upload_id
            )
            received = sum(part.size for part in parts)
        speed = 0.0
        if recent[0]:
            elapsed = max((now - recent[1]).total_seconds(), 1.0)
            speed = int(recent[0]) / elapsed
        done = upload.status == UploadStatus.READY
        remaining = None
        if upload.status in UPLOAD_OPEN and speed > 0:
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
        return (
            upload.updated_at + self.settings.upload_idle if upload.status in UPLOAD_OPEN else None
        )

    def access(self, caller: Caller, upload: UploadSession) -> dict[str, Any]:
        """How the client sends the bytes: a tus URL with its bearer token, or, for direct
        uploads, presigned URLs of the bucket."""
        token = self.catalog.urls.upload_token(upload.id)
        answer: dict[str, Any] = {
            "uploadUrl": f"{self.settings.public_base_url}/uploads/{upload.id}",
            "uploadToken": token.url,
            "uploadTokenExpiresAt": isoformat_z(token.expires_at),
            "directUpload": None,
        }
        if upload.transfer == THROUGH_SERVICE:
            return answer
        answer["uploadUrl"] = None
        answer["uploadToken"] = answer["uploadTokenExpiresAt"] = None
        lifetime = int(self.settings.upload_token_ttl.total_seconds())
        expires_at = isoformat_z(utcnow() + self.settings.upload_token_ttl)
        if upload.transfer == DIRECT_POST:
            post = self.catalog.storage_io(
                self._direct_storage().presign_post,
                upload.storage_key,
                upload.size,
                upload.mime_type or "application/octet-stream",
                lifetime,
            )
            answer["directUpload"] = {"method": "POST", "expiresAt": expires_at, **post}
            return answer
        parts = []
        for number in range(1, math.ceil(upload.size / upload.chunk_size) + 1):
            offset = (number - 1) * upload.chunk_size
            url = self.catalog.storage_io(
                self._direct_storage().presign_part,
                upload.storage_key,
                upload.storage_upload_id,
                number,
                lifetime,
            )
            parts.append(
                {
                    "partNumber": number,
                    "offset": offset,
                    "size": min(upload.chunk_size, upload.size - offset),
                    "url": url,
                }
            )
        answer["directUpload"] = {"method": "PUT", "expiresAt": expires_at, "parts": parts}
        return answer

    def renew_access(self, caller: Caller, upload_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            upload = self._get(session, caller, upload_id)
        self._check_open(upload)
        return self.access(caller, upload)

    # -- streams (tus) ----------------------------------------------------------------------

    def find(self, upload_id: str) -> UploadSession:
        """A session by id, for the HTTP side, whose bearer token already names it."""
        with self.sessions() as session:
            return self._get(session, INTERNAL, upload_id)

    def stream_offset(self, upload: UploadSession) -> int:
        """How many bytes from the start are stored: whole parts from part 1 on, then the tail."""
        if upload.status == UploadStatus.READY:
            return upload.size
        with self.sessions() as session:
            numbers = set(
                session.scalars(select(UploadPart.number).where(UploadPart.session_id == upload.id))
            )
        # The last part is short unless the size is a multiple of the part size; once it is
        # stored there is no tail.
        return min(_contiguous(numbers) * upload.chunk_size, upload.size) + upload.tail_size

    def append(
        self,
        upload_id: str,
        offset: int,
        blocks: Iterable[bytes],
        length: int | None = None,
        checksum: tuple[str, bytes] | None = None,
    ) -> Appended:
        """Add a request body's bytes at ``offset``; returns the new offset.

        Whole parts are stored as soon as they fill, each while the next one arrives, and
        recorded once stored, so a dropped connection loses nothing that arrived and a dead
        process loses at most the part being stored and the one being filled; what is left at
        the end of the body becomes the session's tail object. With a ``checksum`` (algorithm,
        digest) of the body, nothing is recorded until the whole body matched it. A body that
        would go past the declared size fails the session: the client lied about its size.
        """
        upload = self.find(upload_id)
        self._check_open(upload)
        if upload.transfer != THROUGH_SERVICE:
            raise Conflict(f"upload {upload_id!r} goes straight to storage; send its parts there")
        current = self.stream_offset(upload)
        if offset != current:
            raise OffsetMismatch(current, offset)
        if length is not None and offset + length > upload.size:
            raise PayloadTooLarge(
                f"{length} bytes at offset {offset} would pass the declared size of "
                f"{upload.size} bytes"
            )
        writer = StreamWriter(self, upload, offset, verify=checksum is not None)
        digest = hashlib.new(checksum[0]) if checksum else None
        try:
            for block in blocks:
                if writer.end + len(block) > upload.size:
                    writer.abandon()
                    self._fail(upload, "more bytes were sent than the declared size")
                    raise PayloadTooLarge(
                        f"the upload was declared as {upload.size} bytes and more were sent; "
                        "it is cancelled"
                    )
                if digest is not None:
                    digest.update(block)  # in steps of one read: never long on the event loop
                writer.write(block)
            if checksum is not None and digest is not None and digest.digest() != checksum[1]:
                raise ChecksumMismatch(
                    f"the request's bytes do not match its {checksum[0]} checksum; nothing of "
                    "it was kept, send it again"
                )
            writer.finish()
        except StreamInterrupted:
            if checksum is None:
                writer.finish()  # keep what arrived; the client resumes from the new offset
            raise
        finally:
            writer.abandon()  # a part still being stored when the request failed
        return Appended(writer.end, writer.streamed())

    def _fail(self, upload: UploadSession, reason: str) -> None:
        self._discard_bytes(upload)
        self._set_status(upload.id, UploadStatus.FAILED, reason=reason)

    # -- completing -------------------------------------------------------------------------

    def complete(
        self, caller: Caller, upload_id: str, streamed: StreamedFile | None = None
    ) -> Media:
        """Verify the session's bytes and make them a Media record.

        ``streamed``: the file as the request that just sent all of it saw it (see
        :meth:`append`); its checksum is used if the session records exactly its parts.
        """
        with self.sessions() as session:
            upload = self._get(session, caller, upload_id)
            if upload.status == UploadStatus.READY:
                media = session.get(Media, upload.media_id)
                if media is None:
                    raise NotFound(f"the media of upload {upload_id!r} is purged")
                return media
            self._check_open(upload, allow_verifying=True)
            recorded = [
                PartInfo(part.number, part.size, part.etag)
                for part in session.scalars(
                    select(UploadPart)
                    .where(UploadPart.session_id == upload.id)
                    .order_by(UploadPart.number)
                )
            ]
        if upload.transfer == DIRECT_POST:
            stored = self._posted_object(upload)
        else:
            parts = recorded if upload.transfer == THROUGH_SERVICE else self._bucket_parts(upload)
            if parts is not None:
                self._check_parts(upload, parts)
            known = None
            if streamed is not None and streamed.parts == tuple(
                (part.number, part.etag) for part in recorded
            ):
                known = streamed.checksum
            self._set_status(upload.id, UploadStatus.VERIFYING)
            stored = self._assemble(upload, parts, known)
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
            self._set_status(upload.id, UploadStatus.FAILED, reason=str(exc))
            raise
        data = {
            **upload.params,
            "user_id": upload.user_id,
            "original_name": upload.original_name,
        }

        def mark_ready(session: Session) -> None:
            row = session.get(UploadSession, upload.id)
            assert row is not None
            row.status = UploadStatus.READY
            row.media_id = new.id
            row.completed_at = row.updated_at = utcnow()

        new = self.catalog.new_media(
            data,
            storage_key=stored.key,
            type=sniffed.media_type.value,
            mime_type=sniffed.mime_type,
            size=stored.size,
            checksum=stored.checksum,
        )
        # The assembled object is kept if this commit fails: a retried completion reuses it.
        return self.catalog.commit_new(new, None, written_key=None, also=mark_ready)

    @staticmethod
    def _check_parts(upload: UploadSession, parts: list[PartInfo]) -> None:
        chunk = upload.chunk_size
        expected = math.ceil(upload.size / chunk)
        missing = sorted(set(range(1, expected + 1)) - {part.number for part in parts})
        if missing:
            offsets = [(number - 1) * chunk for number in missing[:10]]
            raise Conflict(f"parts are missing at offsets {offsets}; send them, then complete")
        for part in parts:
            want = min(chunk, upload.size - (part.number - 1) * chunk)
            if part.size != want:
                raise Conflict(
                    f"part {part.number} has {part.size} bytes, not {want}; send it again"
                )

    def _direct_storage(self) -> DirectUploads:
        """The backend's direct-upload side. Direct sessions start only on a backend that has
        one; a service restarted on another backend cannot go on with them."""
        if not isinstance(self.storage, DirectUploads):
            raise StorageUnavailable(
                f"this upload went straight to storage, and {self.storage.name} storage takes "
                "no direct uploads"
            )
        return self.storage

    def _bucket_parts(self, upload: UploadSession) -> list[PartInfo] | None:
        """What the client put straight into the bucket; None once a completion assembled them."""
        try:
            return self.catalog.storage_io(
                self._direct_storage().list_parts, upload.storage_key, upload.storage_upload_id
            )
        except ObjectNotFound:
            if upload.status == UploadStatus.VERIFYING:
                return None
            raise

    def _posted_object(self, upload: UploadSession) -> StoredObject:
        try:
            info = self.catalog.storage_io(self.storage.head, upload.storage_key)
        except ObjectNotFound:
            raise Conflict(
                f"nothing has been posted for upload {upload.id!r} yet; post the file, then "
                "complete"
            ) from None
        if info.size != upload.size:
            self._fail(upload, f"{info.size} bytes were posted, not the declared {upload.size}")
            raise Conflict(f"{info.size} bytes were posted, not the declared {upload.size}")
        self._set_status(upload.id, UploadStatus.VERIFYING)
        checksum = self.catalog.storage_io(checksum_of, self.storage, upload.storage_key)
        return StoredObject(upload.storage_key, info.size, checksum)

    def _assemble(
        self, upload: UploadSession, parts: list[PartInfo] | None, checksum: str | None
    ) -> StoredObject:
        """The parts made one object; ``None``: a completion that died after assembling them.
        ``checksum``: the parts' sha256, if already known."""
        try:
            if parts is None:
                raise ObjectNotFound(upload.storage_key)
            return self.catalog.storage_io(
                self.storage.complete_parts,
                upload.storage_key,
                upload.storage_upload_id,
                parts,
                checksum,
            )
        except ValueError as exc:
            # Storage holds other parts than the session recorded (one put again and not
            # recorded, or lost with a machine): nothing can be assembled from them.
            reason = f"the stored parts do not match what the upload recorded ({exc})"
            self._fail(upload, reason)
            raise Conflict(f"{reason}; start a new upload") from None
        except ObjectNotFound:
            # The parts are gone; the object they made is there, or the upload is lost.
            if not self.catalog.storage_io(self.storage.exists, upload.storage_key):
                raise
            checksum = self.catalog.storage_io(checksum_of, self.storage, upload.storage_key)
            return StoredObject(upload.storage_key, upload.size, checksum)

    # -- cancelling and expiring ------------------------------------------------------------

    def cancel(self, caller: Caller, upload_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            upload = self._get(session, caller, upload_id)
        if upload.status == UploadStatus.CANCELLED:
            return self.progress(caller, upload_id)
        if upload.status not in UPLOAD_OPEN:
            raise Conflict(f"upload {upload_id!r} is {upload.status} and cannot be cancelled")
        self._discard_bytes(upload)
        with self.catalog.changing() as session:
            row = self._get(session, caller, upload_id, for_update=True)
            row.status = UploadStatus.CANCELLED
            row.updated_at = utcnow()
            session.flush()
            self.catalog.work.record(session, UploadEvent.CANCELLED, upload=self._summary(row))
        return self.progress(caller, upload_id)

    def expire_idle(self, limit: int = 100) -> int:
        """Discard the parts of sessions nobody has touched for the idle period."""
        cutoff = utcnow() - self.settings.upload_idle
        with self.sessions() as session:
            idle = list(
                session.scalars(
                    select(UploadSession)
                    .where(
                        UploadSession.status.in_(UPLOAD_EXPIRABLE),
                        UploadSession.updated_at < cutoff,
                    )
                    .limit(limit)
                )
            )
        for upload in idle:
            self._discard_bytes(upload)
            with self.sessions.begin() as session:
                row = session.get(UploadSession, upload.id, with_for_update=True)
                if row is not None and row.status in UPLOAD_EXPIRABLE and row.updated_at < cutoff:
                    row.status = UploadStatus.EXPIRED
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

    def _discard_bytes(self, upload: UploadSession) -> None:
        """Everything stored for a session that will not complete: parts, tail, posted object."""
        if upload.transfer == DIRECT_POST:
            self.catalog.storage_io(self.storage.delete, upload.storage_key)
        else:
            self.catalog.storage_io(
                self.storage.abort_parts, upload.storage_key, upload.storage_upload_id
            )
        self.catalog.discard_object(upload.tail_key)

    @staticmethod
    def _check_open(upload: UploadSession, allow_verifying: bool = False) -> None:
        if upload.status in UPLOAD_OPEN or (
            allow_verifying and upload.status == UploadStatus.VERIFYING
        ):
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


def _contiguous(numbers: set[int]) -> int:
    """How many parts, from part 1 on, are all there."""
    count = 0
    while count + 1 in numbers:
        count += 1
    return count
