"""HTTP responses of the file endpoint: streaming, ranges, validators and safe headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

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
# Every response, errors included: no sniffing, and nothing served here may run script.
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Referrer-Policy": "no-referrer",
}


def error(status: int, message: str) -> Response:
    return secure(
        Response(
            message + "\n",
            status=status,
            mimetype="text/plain",
            headers={
                "Cache-Control": "no-store",
            },
        )
    )


def secure(response: Response) -> Response:
    response.headers.update(SAFE_HEADERS)
    return response


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
    headers: dict[str, Any] = {
        "Content-Type": content_type(media.mime_type),
        "Content-Disposition": content_disposition(media.original_name, media.mime_type, download),
        "Accept-Ranges": "bytes",
        "Last-Modified": media.created_at.replace(tzinfo=UTC),
        "Cache-Control": _cache_control(signed_until),
    }
    tag = etag(media.checksum)
    if tag:
        headers["ETag"] = tag
        if tag in _if_none_match(request):
            return secure(Response(status=304, headers=headers))
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
        body: Iterator[bytes] = iter(())
    else:
        body = read(storage.iter_chunks(media.storage_key, start, stop, chunk_size=CHUNK_SIZE))
    response = Response(body, status=status, headers=headers, direct_passthrough=True)
    return secure(response)


def _cache_control(signed_until: int | None) -> str:
    if signed_until is None:
        return PUBLIC_CACHE
    remaining = max(0, signed_until - int(datetime.now(UTC).timestamp()))
    return f"private, max-age={min(remaining, 3600)}"


def _if_none_match(request: Request) -> set[str]:
    header = request.headers.get("If-None-Match", "")
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}
