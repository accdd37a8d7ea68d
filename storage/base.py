"""The storage interface every backend implements, its value types and the key helpers."""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from storage.errors import InvalidKey, ObjectNotFound

MAX_KEY_LENGTH = 512
# Every key new_key makes starts with this: what lies elsewhere was not written by the service.
GENERATED_KEY_PREFIX = "media/"
DEFAULT_CHUNK_SIZE = 1024 * 1024

_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,511}")


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


def new_key(now: datetime | None = None) -> str:
    """A fresh server-generated key: ``media/YYYY/MM/DD/<32 hex of a uuid4>``.

    ``now`` defaults to the current time; aware values are converted to UTC, naive ones are taken
    as UTC already.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is not None:
        now = now.astimezone(UTC)
    return f"{GENERATED_KEY_PREFIX}{now:%Y/%m/%d}/{uuid.uuid4().hex}"


def check_range(start: int, end: int | None, chunk_size: int) -> None:
    """The arguments of :meth:`Storage.iter_chunks`, checked the same way by every backend."""
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"end must be >= start, got start={start}, end={end}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise :class:`InvalidKey`."""
    if not isinstance(key, str):
        raise InvalidKey(key, f"must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey(key, "is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(key, f"is longer than {MAX_KEY_LENGTH} characters")
    if "\x00" in key:
        raise InvalidKey(key, "contains a NUL character")
    if "\\" in key:
        raise InvalidKey(key, "contains a backslash")
    if key.startswith("/"):
        raise InvalidKey(key, "starts with '/'")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey(key, "has an empty path segment")
        if segment in (".", ".."):
            raise InvalidKey(key, f"has a {segment!r} path segment")
    # fullmatch, not match with "$": "$" would also accept a trailing newline.
    if _KEY_RE.fullmatch(key) is None:
        raise InvalidKey(
            key,
            "must start with a letter or digit and contain only letters, digits, '.', '_', '-' "
            "and '/'",
        )
    return key


class Storage(ABC):
    """A place to keep immutable blobs under string keys."""

    name: str
    # True where reads and writes block the calling thread (files): callers on an event loop
    # then run them in a thread pool. Network backends on green sockets say False.
    blocking_io: bool = True

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

    def abort_incomplete_uploads(self, older_than: timedelta) -> int:
        """Discard partial uploads older than ``older_than``; returns how many. Backends whose
        writes leave nothing behind when interrupted have none."""
        return 0

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`StorageUnavailable` if the backend cannot be used (health check)."""

    def presigned_get_url(
        self, key: str, expires_in: int, *, content_type: str, disposition: str
    ) -> str | None:
        """A URL that serves the object directly for ``expires_in`` seconds, answering with
        ``content_type`` and ``disposition``; None where the backend cannot presign (the
        service then signs a URL to its own endpoint)."""
        return None
