"""A request body streamed into an upload session (tus PATCH): cut into the session's fixed
parts, each stored while the next arrives, recorded about once a second, the rest kept as the
session's tail object between requests."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, update

from services.media.catalog.records import Pending
from services.media.core.ids import utcnow, uuid7
from services.media.core.models import UploadPart, UploadSession
from services.media.core.vocabulary import UPLOAD_OPEN, UploadStatus
from services.media.exceptions import Conflict
from storage import PartInfo
from storage.errors import ObjectNotFound

if TYPE_CHECKING:
    from services.media.uploads.sessions import Uploads

log = logging.getLogger(__name__)

# How often a stream records the parts it stored (and so how far the offset a client can see
# trails the bytes stored, while a request is still sending).
RECORD_INTERVAL = 1.0  # seconds


@dataclass(frozen=True)
class StreamedFile:
    """A whole file that one request body carried from offset 0: its sha256, hashed as the bytes
    went to storage, and the parts it was stored as. Completion uses the checksum instead of
    reading the file back, if the session still records exactly these parts."""

    checksum: str  # sha256:<hex>
    parts: tuple[tuple[int, str], ...]  # (number, etag)


@dataclass(frozen=True)
class Appended:
    end: int  # the session's offset after the request
    streamed: StreamedFile | None = None


class StreamWriter:
    """Cuts a stream into the session's parts, keeping the last partial part as its tail."""

    def __init__(self, uploads: Uploads, upload: UploadSession, offset: int, verify: bool) -> None:
        self.uploads = uploads
        self.upload = upload
        self.storage = uploads.storage
        self.catalog = uploads.catalog
        self.chunk = upload.chunk_size
        self.number = offset // self.chunk + 1
        self.start = self.end = offset
        # Until a checksummed body is verified, parts are stored but not recorded.
        self.deferred = verify
        self.seq = upload.append_seq
        self.tail_key = upload.tail_key
        self.pending: list[PartInfo] = []  # stored, not yet recorded
        self.recorded_at = time.monotonic()
        self.stored: list[PartInfo] = []  # every part this request stored
        self.in_flight: Pending | None = None  # the part being stored while the next arrives
        # A body from offset 0 is hashed on its way to storage: if it is the whole file,
        # completion need not read the file back.
        self.hasher = hashlib.sha256() if offset == 0 else None
        # The part being filled. Blocks are copied in as they come, so at most this part, the
        # one being stored and one block are held.
        self.buffer = bytearray(self.chunk)
        self.buffered = 0
        if upload.tail_size:
            tail = self.catalog.storage_io(
                self.storage.read_head, upload.tail_key, upload.tail_size
            )
            if len(tail) != upload.tail_size:
                raise ObjectNotFound(f"{upload.tail_key} (the upload's last partial part)")
            self._fill(memoryview(tail))

    def _fill(self, view: memoryview) -> memoryview:
        """Copy what fits into the part being filled; returns the rest."""
        taken = min(len(view), self.chunk - self.buffered)
        self.buffer[self.buffered : self.buffered + taken] = view[:taken]
        self.buffered += taken
        return view[taken:]

    def _take(self) -> bytes | bytearray:
        """The bytes buffered so far, as a part; the buffer starts empty again."""
        if self.buffered == self.chunk:
            data: bytes | bytearray = self.buffer
            self.buffer = bytearray(self.chunk)
        else:
            data = bytes(memoryview(self.buffer)[: self.buffered])
        self.buffered = 0
        return data

    def write(self, block: bytes) -> None:
        self.end += len(block)
        view = memoryview(block)
        while view:
            view = self._fill(view)
            if self.buffered == self.chunk:
                self._settle()  # first: its part is freed before another buffer is made
                self._store_part(self._take())

    def finish(self) -> None:
        """Store the rest: the last part if the file is whole, else a new tail object."""
        self._settle()
        if self.end == self.start:
            return  # nothing arrived: the session stays as it was
        if self.buffered and self.end == self.upload.size:
            self._store_part(self._take())
            self._settle()
        if not self.buffered:
            self._record(None, 0)
            return
        # A new key each time: until the session row names it, the old tail is the valid one.
        size = self.buffered
        key = f"{self.upload.storage_key}.tail-{uuid7()}"
        self.catalog.storage_io(self.storage.put, key, [self._take()], "application/octet-stream")
        self._record(key, size)

    def abandon(self) -> None:
        """Wait for the part still being stored, if any, and record nothing more."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is not None:
            try:
                in_flight.wait()
            except Exception:
                log.debug("a part of upload %s failed after its request did", self.upload.id)

    def streamed(self) -> StreamedFile | None:
        """The whole file, if this request carried all of it, from offset 0."""
        if self.hasher is None or self.end != self.upload.size or self.in_flight is not None:
            return None
        return StreamedFile(
            f"sha256:{self.hasher.hexdigest()}",
            tuple((part.number, part.etag) for part in self.stored),
        )

    def _store_part(self, data: bytes | bytearray) -> None:
        """Start storing a full part; the previous one is settled first, so parts are hashed
        and recorded in order and at most two are held in memory."""
        self._settle()
        self.in_flight = self.catalog.start(self._put, self.number, data)
        self.number += 1

    def _put(self, number: int, data: bytes | bytearray) -> PartInfo:
        # The file's hash and the part's write (which hashes the part) run on two threads; the
        # next part waits for both, so the file is hashed in order.
        hashing = None
        if self.hasher is not None:
            hashing = self.catalog.start(self.catalog.offload, self.hasher.update, data)
        try:
            return self.catalog.storage_io(
                self.storage.put_part,
                self.upload.storage_key,
                self.upload.storage_upload_id,
                number,
                data,
            )
        finally:
            if hashing is not None:
                hashing.wait()

    def _settle(self) -> None:
        """Wait for the part being stored; record what is stored now and then.

        Recording is a transaction on the event loop: once per part it cost the loop more than
        receiving the part did. Until recorded, parts are only lost to a process that dies (the
        client resends from the recorded offset); finish() records the rest.
        """
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is None:
            return
        part = in_flight.wait()
        self.stored.append(part)
        self.pending.append(part)
        if not self.deferred and time.monotonic() - self.recorded_at >= RECORD_INTERVAL:
            self._record(None, 0)

    def _record(self, tail_key: str | None, tail_size: int) -> None:
        if not self.pending and tail_key == self.tail_key:
            return
        self.seq = self._commit(self.seq, self.pending, tail_key, tail_size)
        self.pending = []
        self.recorded_at = time.monotonic()
        if self.tail_key is not None and self.tail_key != tail_key:
            self.catalog.discard_object(self.tail_key)
        self.tail_key = tail_key

    def _commit(self, seq: int, parts: list[PartInfo], tail_key: str | None, tail: int) -> int:
        """Record stored parts and the new tail, if no other request wrote since ``seq``."""
        upload_id = self.upload.id
        now = utcnow()
        with self.uploads.sessions.begin() as session:
            result = session.execute(
                update(UploadSession)
                .where(
                    UploadSession.id == upload_id,
                    UploadSession.append_seq == seq,
                    UploadSession.status.in_(UPLOAD_OPEN),
                )
                .values(
                    append_seq=seq + 1,
                    tail_key=tail_key,
                    tail_size=tail,
                    status=UploadStatus.UPLOADING,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            changed = cast(CursorResult[Any], result).rowcount
            if changed != 1:
                raise Conflict(
                    f"upload {upload_id!r} was changed by another request meanwhile (or "
                    "cancelled); ask for its offset and resume from there"
                )
            for part in parts:
                session.merge(
                    UploadPart(
                        session_id=upload_id,
                        number=part.number,
                        size=part.size,
                        etag=part.etag,
                        received_at=now,
                    )
                )
        return seq + 1
