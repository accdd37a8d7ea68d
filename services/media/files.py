"""HTTP responses of the file endpoint: streaming, ranges, validators and safe headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from werkzeug.http import http_date, parse_date
from werkzeug.wrappers import Request, Response

from services.media.models import Media
from services.media.serving import (
    RangeNotSatisfiable,
    content_disposition,
    content_type,
    etag,
    requested_range,
)
from storage import Storage

CHUNK_SIZE = 1024 * 1024
PUBLIC_CACHE = "public, max-age=604800"


def error(status: int, message: str) -> Response:
    return Response(
        message + "\n", status=status, mimetype="text/plain", headers={"Cache-Control": "no-store"}
    )


def file_response(
    request: Request,
    media: Media,
    storage: Storage,
    *,
    download: bool,
    signed_until: int | None,
    read: Callable[[Iterator[bytes]], Iterator[bytes]],
) -> Response:
    """Stream ``media``'s bytes; ``signed_until`` is the link's expiry for private media.

    ``read`` wraps the chunk iterator (the service passes one that keeps blocking disk reads off
    the event loop).
    """
    assert media.storage_key is not None
    # The bytes of a record never change: they are as old as the record.
    last_modified = media.created_at.replace(tzinfo=UTC, microsecond=0)
    headers: dict[str, Any] = {
        "Content-Type": content_type(media.mime_type),
        "Content-Disposition": content_disposition(media.original_name, media.mime_type, download),
        "Accept-Ranges": "bytes",
        "Last-Modified": http_date(last_modified),
        "Cache-Control": _cache_control(signed_until),
    }
    tag = etag(media.checksum)
    if tag:
        headers["ETag"] = tag
    if _not_modified(request, tag, last_modified):
        return Response(status=304, headers=headers)
    size = media.size
    try:
        byte_range = requested_range(request.headers.get("Range"), size)
    except RangeNotSatisfiable:
        response = error(416, "the requested range is outside the file")
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    if byte_range is None:
        start, stop, status = 0, size, 200
    else:
        start, stop, status = byte_range.start, byte_range.stop, 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    if request.method == "HEAD":
        storage.head(media.storage_key)  # a HEAD must not promise bytes that are gone
        body: Iterator[bytes] = iter(())
    else:
        body = read(storage.iter_chunks(media.storage_key, start, stop, chunk_size=CHUNK_SIZE))
    return Response(body, status=status, headers=headers, direct_passthrough=True)


def _cache_control(signed_until: int | None) -> str:
    if signed_until is None:
        return PUBLIC_CACHE
    remaining = max(0, signed_until - int(datetime.now(UTC).timestamp()))
    return f"private, max-age={min(remaining, 3600)}"


def _not_modified(request: Request, tag: str | None, last_modified: datetime) -> bool:
    """RFC 9110 13.1.2-3: If-None-Match decides when present, else If-Modified-Since."""
    header = request.headers.get("If-None-Match")
    if header is not None:
        candidates = {part.strip().removeprefix("W/") for part in header.split(",")}
        return "*" in candidates or (tag is not None and tag in candidates)
    since = parse_date(request.headers.get("If-Modified-Since"))
    return since is not None and last_modified <= since
