"""How stored bytes are handed to browsers: what may be shown inline, names in headers, ranges.

Pure rules, shared by the HTTP file endpoint and by presigned S3 links.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from werkzeug.http import parse_range_header

# Raster images, audio, video, plain text and PDF are shown inline; anything a browser could run
# or reinterpret (HTML, SVG, XML, scripts, archives, office files) is always a download.
_INLINE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/avif",
        "image/heic",
        "image/tiff",
        "text/plain",
        "application/pdf",
    }
)
_INLINE_FAMILIES = ("audio/", "video/")


def inline_allowed(mime_type: str) -> bool:
    mime_type = mime_type.split(";")[0].strip().lower()
    return mime_type in _INLINE_TYPES or mime_type.startswith(_INLINE_FAMILIES)


def disposition_kind(mime_type: str, download: bool) -> str:
    return "inline" if not download and inline_allowed(mime_type) else "attachment"


def content_disposition(original_name: str, mime_type: str, download: bool) -> str:
    """RFC 6266: an ASCII fallback ``filename`` and the exact name as UTF-8 ``filename*``."""
    kind = disposition_kind(mime_type, download)
    fallback = _ascii_fallback(original_name) or "file"
    encoded = quote(original_name, safe="")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def content_type(mime_type: str) -> str:
    # Text we accepted is UTF-8 (sniffing checked it); say so, so no browser guesses.
    return f"{mime_type}; charset=utf-8" if mime_type == "text/plain" else mime_type


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_name = decomposed.encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._ ()+-]", "_", ascii_name).strip()


def etag(checksum: str | None) -> str | None:
    """A strong validator: the bytes of a record never change, and the checksum names them."""
    if not checksum:
        return None
    return '"' + checksum.replace(":", "-") + '"'


class RangeNotSatisfiable(Exception):
    pass


@dataclass(frozen=True)
class ByteRange:
    start: int
    stop: int  # exclusive

    @property
    def length(self) -> int:
        return self.stop - self.start


def requested_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range to serve, or None for the whole file.

    Multi-range requests are answered with the whole file (RFC 9110 lets a server ignore Range),
    which keeps a client from making us assemble many small pieces of a large file.
    """
    if not header:
        return None
    parsed = parse_range_header(header)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return None
    bounds = parsed.range_for_length(size)
    if bounds is None:
        raise RangeNotSatisfiable
    return ByteRange(*bounds)
