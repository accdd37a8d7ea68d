"""The storage interface every backend implements, and its value types.

What only some backends can do (direct uploads, presigned reads) is in :mod:`storage.capabilities`;
keys in :mod:`storage.keys`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Self

from storage.errors import ObjectNotFound

DEFAULT_CHUNK_SIZE = 1024 * 1024
# Staged uploads (begin_parts ... complete_parts) follow S3's multipart rules on every backend:
# parts are numbered 1..MAX_PART_NUMBER and all but the last must be at least MIN_PART_SIZE.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows about a stored object."""

    key: str
    size: int
    content_type: str | None  # None where the backend does not keep it (local)
    modified_at: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class StoredObject:
    """The result of a completed write."""

    key: str
    size: int
    checksum: str  # "sha256:<64 lowercase hex>" of the bytes written


@dataclass(frozen=True)
class PartInfo:
    """One stored part of a staged upload, as :meth:`Storage.put_part` reports it."""

    number: int  # 1-based
    size: int
    etag: str  # S3: the ETag S3 returned; local: sha256 hex of the part


def check_range(start: int, end: int | None, chunk_size: int) -> None:
    """The arguments of :meth:`Storage.iter_chunks`, checked the same way by every backend."""
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"end must be >= start, got start={start}, end={end}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")


def check_part_number(number: int) -> None:
    """A part number as :meth:`Storage.put_part` accepts it: an int in 1..MAX_PART_NUMBER."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError(f"part number must be an int, got {number!r}")
    if not 1 <= number <= MAX_PART_NUMBER:
        raise ValueError(f"part number must be between 1 and {MAX_PART_NUMBER}, got {number}")


def check_parts(parts: Iterable[PartInfo]) -> list[PartInfo]:
    """The part list of :meth:`Storage.complete_parts`, checked and sorted by number.

    ValueError if it is empty, names a part twice or has an impossible part number.
    """
    given = list(parts)
    if not given:
        raise ValueError("a staged upload cannot be completed without parts")
    for part in given:
        if not isinstance(part, PartInfo):
            raise ValueError(f"parts must be PartInfo, got {type(part).__name__}")
        check_part_number(part.number)
    ordered = sorted(given, key=lambda part: part.number)
    counts = Counter(part.number for part in ordered)
    duplicates = sorted(number for number, count in counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"part list names part(s) {duplicates} more than once")
    return ordered


class Storage(ABC):
    """A place to keep immutable blobs under string keys."""

    name: str
    # True where reads and writes block the calling thread (files): callers on an event loop
    # then run them in a thread pool. Network backends on green sockets say False.
    blocking_io: bool = True

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Self:
        """The backend configured from the service's settings (its own ``STORAGE_*``/vendor
        keys); ValueError naming the setting that is missing or wrong."""

    @abstractmethod
    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        """Store ``chunks`` under ``key`` atomically, replacing any existing object.

        Readers never see a partial object. Size and sha256 are computed while writing.
        """

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Describe the object; :class:`ObjectNotFound` if absent."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    @abstractmethod
    def iter_chunks(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` (``end=None``: to the end); :class:`ObjectNotFound` if
        absent. Never holds the whole object in memory."""

    def read_head(self, key: str, length: int) -> bytes:
        """The first ``length`` bytes (fewer if the object is shorter), for content sniffing."""
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        chunk_size = max(1, min(length, DEFAULT_CHUNK_SIZE))
        return b"".join(self.iter_chunks(key, 0, length, chunk_size=chunk_size))

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete the object: True if one was deleted, False if there was none. Idempotent."""

    @abstractmethod
    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every stored object whose key starts with ``prefix``, in no particular order.

        Never lists the temporary data of writes still in flight.
        """

    # -- staged (multi-part) uploads ------------------------------------------------------------
    #
    # An object sent in numbered parts, possibly over several requests and in any order, then
    # assembled at once. Until complete_parts the parts are kept apart from objects: iter_objects
    # never lists them and the key holds whatever it held before. Parts whose upload is never
    # completed nor aborted are removed by abort_incomplete_uploads.

    @abstractmethod
    def begin_parts(self, key: str, content_type: str, part_size: int | None = None) -> str:
        """Start a staged upload that will become the object at ``key``; returns its opaque
        upload id, which the other ``*_parts`` calls take together with the same ``key``.

        ``part_size``, when the caller knows it, is the size of every part but the last: a
        backend may then store each part at its place in the object as it arrives, so that
        completing is not a copy (the local backend does).
        """

    @abstractmethod
    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> PartInfo:
        """Store part ``number`` (1..MAX_PART_NUMBER) of the upload; putting the same number
        again replaces it (a harmless retry).

        Every part but the last must be at least MIN_PART_SIZE (S3's rule; the caller ensures
        it). :class:`ObjectNotFound` if the upload id is unknown or aborted.
        """

    @abstractmethod
    def complete_parts(
        self, key: str, upload_id: str, parts: list[PartInfo], checksum: str | None = None
    ) -> StoredObject:
        """Assemble ``parts`` (as put_part returned them) in number order into the object at
        ``key``, atomically: readers never see a partial object. Returns the size and sha256 of
        the whole object. Stored parts not in ``parts`` are discarded.

        ``checksum`` (``sha256:<hex>``): the sha256 of the parts' bytes in order, when the caller
        hashed them as it put them. The backend may return it as given instead of reading the
        object back to compute it; the etags, checked as always, tie it to the stored parts.

        :class:`ObjectNotFound` if the upload id is unknown; ValueError if ``parts`` does not
        match what was stored (a part never put, a wrong etag): the upload is then left as it
        was, to be completed with the right list or aborted.
        """

    @abstractmethod
    def abort_parts(self, key: str, upload_id: str) -> None:
        """Discard the staged parts. Idempotent: an unknown, already aborted or completed
        upload id is a no-op."""

    def abort_incomplete_uploads(self, older_than: timedelta) -> int:
        """Discard partial uploads older than ``older_than``; returns how many. Backends whose
        writes leave nothing behind when interrupted have none."""
        return 0

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`StorageUnavailable` if the backend cannot be used (health check)."""

    def local_path(self, key: str) -> str | None:
        """A path on this machine where the object can be read as a file, if the backend
        keeps it as one (so tools can read it without a copy); None otherwise."""
        return None
