"""What some backends can do beyond the :class:`~storage.base.Storage` interface.

Like tusd's optional data-store interfaces: a backend that has a capability implements its
protocol, and callers ask with ``isinstance(storage, DirectUploads)`` rather than reading a flag
and catching ``NotImplementedError``. A new backend implements the core interface and any of
these it can.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from storage.base import PartInfo


@runtime_checkable
class DirectUploads(Protocol):
    """Clients send the bytes of a staged upload (or a small object whole) to the backend
    itself, with URLs the backend signs (S3 presigned UploadPart and POST)."""

    def presign_part(self, key: str, upload_id: str, number: int, expires_in: int) -> str:
        """A URL to which a client PUTs part ``number`` of the staged upload."""
        ...

    def presign_post(
        self, key: str, size: int, content_type: str, expires_in: int
    ) -> dict[str, Any]:
        """``{"url", "fields"}`` of an HTML form POST that stores exactly ``size`` bytes at
        ``key``: the client sends ``fields`` and then the file as the ``file`` field."""
        ...

    def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        """The parts stored so far, in number order; :class:`ObjectNotFound` if the upload id is
        unknown, aborted or completed."""
        ...


@runtime_checkable
class PresignedReads(Protocol):
    """The backend serves an object itself to whoever holds a URL it signed."""

    def presigned_get_url(
        self, key: str, expires_in: int, *, content_type: str, disposition: str
    ) -> str | None:
        """A URL that serves the object directly for ``expires_in`` seconds, answering with
        ``content_type`` and ``disposition``; None when this link cannot be presigned (then the
        service signs a URL to its own endpoint)."""
        ...
