"""Turning an uploaded payload into checked bytes: size caps, base64, sniffing and policy.

Everything here is pure CPU work with no I/O; callers run the heavy parts in a thread pool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from services.media.core.settings import MediaSettings
from services.media.core.vocabulary import MediaType
from services.media.exceptions import PayloadTooLarge, UnsupportedMediaType, ValidationError
from services.media.ingest.sniffing import SNIFF_BYTES, Sniffed, declared_type_conflicts, sniff
from services.media.processing.imaging import (
    DECODED_MIME_TYPES,
    DEFAULT_LIMITS,
    ImagingLimits,
    header_size,
)


@dataclass(frozen=True)
class CheckedFile:
    data: bytes
    sniffed: Sniffed
    checksum: str
    width: int | None
    height: int | None

    @property
    def size(self) -> int:
        return len(self.data)


def max_base64_length(decoded_bytes: int) -> int:
    return 4 * -(-decoded_bytes // 3)


def decoded_length(encoded: str) -> int:
    """Exact decoded size of well-formed base64, known without decoding it."""
    padding = 2 if encoded.endswith("==") else 1 if encoded.endswith("=") else 0
    return len(encoded) // 4 * 3 - padding


def check_declared_size(encoded: str, settings: MediaSettings) -> None:
    """The RPC cap, checked on the encoded length before anything is decoded."""
    if (
        len(encoded) > max_base64_length(settings.rpc_max_content_bytes)
        or decoded_length(encoded) > settings.rpc_max_content_bytes
    ):
        raise PayloadTooLarge(
            f"content is over the RPC limit of {settings.rpc_max_content_bytes} bytes; "
            "use an upload session for larger files"
        )


def _b64decode(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError.for_field("content", "Not valid base64.") from None


def sniff_payload(encoded: str, declared_mime: str | None, settings: MediaSettings) -> Sniffed:
    """Sniff from the first bytes only, and apply type and size policy before the full decode."""
    if not encoded:
        raise ValidationError.for_field("content", "The file is empty.")
    if len(encoded) % 4:
        raise ValidationError.for_field("content", "Not valid base64.")
    head = _b64decode(encoded[: max_base64_length(SNIFF_BYTES)])
    if not head:
        raise ValidationError.for_field("content", "The file is empty.")
    sniffed = sniff(head)
    check_policy(sniffed, decoded_length(encoded), declared_mime, settings)
    return sniffed


def check_policy(
    sniffed: Sniffed, size: int, declared_mime: str | None, settings: MediaSettings
) -> None:
    if declared_type_conflicts(declared_mime, sniffed):
        raise UnsupportedMediaType(
            f"declared type {declared_mime!r} does not match the content, which is "
            f"{sniffed.mime_type}"
        )
    rule = settings.upload_policy.get(sniffed.media_type)
    if rule is None or sniffed.mime_type not in rule.mime_types:
        raise UnsupportedMediaType(f"files of type {sniffed.mime_type} are not accepted")
    if size > rule.max_bytes:
        raise PayloadTooLarge(
            f"{sniffed.media_type.value.lower()} files may be at most {rule.max_bytes} bytes; "
            f"this one is {size}"
        )


def decode_and_check(
    encoded: str, sniffed: Sniffed, limits: ImagingLimits = DEFAULT_LIMITS
) -> CheckedFile:
    """The CPU-heavy part: full decode, checksum and image header. Run it off the event loop."""
    data = _b64decode(encoded)
    if not data:
        raise ValidationError.for_field("content", "The file is empty.")
    # Dimensions from the header alone (no pixel decode); bombs and unreadable headers are
    # refused here, before anything is stored.
    decodable = sniffed.media_type is MediaType.IMAGE and sniffed.mime_type in DECODED_MIME_TYPES
    width, height = header_size(data, limits=limits) if decodable else (None, None)
    return CheckedFile(
        data=data,
        sniffed=sniffed,
        checksum="sha256:" + hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
    )
