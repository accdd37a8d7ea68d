"""HTTP responses of the file endpoint: streaming, ranges, validators and safe headers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from werkzeug.http import http_date, parse_date
from werkzeug.wrappers import Request, Response

from services.media.core.models import Media, StoredVariant
from services.media.delivery.serving import (
    RangeNotSatisfiable,
    content_disposition,
    content_type,
    etag,
    requested_range,
)
from services.media.delivery.urls import LinkRejected, MediaUrls
from services.media.exceptions import MediaError, http_status
from storage import ObjectNotFound, Storage

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
PUBLIC_CACHE = "public, max-age=604800"


def download(
    request: Request,
    media_id: str,
    *,
    urls: MediaUrls,
    find: Callable[[str], Media | None],
    storage: Storage,
    read: Callable[[Iterator[bytes]], Iterator[bytes]],
) -> Response:
    """``GET /files/{id}``: public media as they are, private media with a valid signed link.

    ``find`` gives the media the endpoint may serve (None otherwise); ``read`` wraps the reads
    of a blocking backend so they leave the event loop.
    """
    try:
        download = request.args.get("download") in ("1", "true")
        signed_until = None
        # The signature is checked before the database: a bad one is 403 whether the id
        # exists or not, so no answer tells a stranger which private ids exist.
        if "signature" in request.args:
            try:
                urls.verify(
                    media_id,
                    expires=request.args.get("expires"),
                    key_id=request.args.get("kid"),
                    signature=request.args.get("signature"),
                    download=download,
                    variant=request.args.get("variant", ""),
                )
            except LinkRejected as exc:
                return error(403, str(exc))
            signed_until = int(request.args["expires"])
        media = find(media_id)
        # Unsigned requests for private media get the answer an unknown id gets.
        if media is None or (signed_until is None and not media.is_public):
            return error(404, "no such file")
        if media.is_public:
            signed_until = None
        served = Served.original(media)
        variant_name = request.args.get("variant")
        if variant_name is not None:
            variant = next((v for v in media.variants if v.name == variant_name), None)
            if variant is None:
                return error(404, "no such file")
            served = Served.variant(media, variant)
        return file_response(
            request, served, storage, download=download, signed_until=signed_until, read=read
        )
    except ObjectNotFound:
        log.error("media %s is READY but its stored object is missing", media_id)
        return error(404, "no such file")
    except MediaError as exc:
        return error(http_status(exc), str(exc))
    except Exception:
        log.exception("file endpoint failed for %s", media_id)
        return error(503, "the file cannot be served right now")


def error(status: int, message: str) -> Response:
    return Response(
        message + "\n", status=status, mimetype="text/plain", headers={"Cache-Control": "no-store"}
    )


@dataclass(frozen=True)
class Served:
    """What the endpoint streams: a media's original bytes, or one of its variants."""

    storage_key: str
    mime_type: str
    name: str
    size: int
    tag: str | None
    created_at: datetime

    @classmethod
    def original(cls, media: Media) -> Served:
        assert media.storage_key is not None
        return cls(
            media.storage_key,
            media.mime_type,
            media.original_name,
            media.size,
            etag(media.checksum),
            media.created_at,
        )

    @classmethod
    def variant(cls, media: Media, variant: StoredVariant) -> Served:
        stem = PurePosixPath(media.original_name).stem or "file"
        extension = {"JPEG": "jpg"}.get(variant.format, variant.format.lower())
        return cls(
            variant.storage_key,
            variant.mime_type,
            f"{stem}-{variant.name}.{extension}",
            variant.size,
            # Named by the recipe: the same recipe always stands for the same bytes.
            f'"{variant.name}-{variant.fingerprint}"',
            variant.created_at,
        )


def file_response(
    request: Request,
    media: Served,
    storage: Storage,
    *,
    download: bool,
    signed_until: int | None,
    read: Callable[[Iterator[bytes]], Iterator[bytes]],
) -> Response:
    """Stream the bytes of ``media`` (an original or a variant); ``signed_until`` is the link's
    expiry for private media.

    ``read`` wraps the chunk iterator (the service passes one that keeps blocking disk reads off
    the event loop).
    """
    # The bytes of a record never change: they are as old as the record.
    last_modified = media.created_at.replace(tzinfo=UTC, microsecond=0)
    headers: dict[str, Any] = {
        "Content-Type": content_type(media.mime_type),
        "Content-Disposition": content_disposition(media.name, media.mime_type, download),
        "Accept-Ranges": "bytes",
        "Last-Modified": http_date(last_modified),
        "Cache-Control": _cache_control(signed_until),
    }
    tag = media.tag
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
