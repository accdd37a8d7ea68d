"""Wire field types shared by the media schemas."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields

from services.media.core.ids import isoformat_z

MAX_NAME_BYTES = 255
MAX_METADATA_BYTES = 64 * 1024

# Bidirectional controls can make "gpj.exe" display as "exe.jpg"; zero-width ones hide text.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


class UtcDateTime(fields.Field):
    """ISO-8601 on the wire (``...Z`` out; any offset in, naive taken as UTC); naive UTC inside."""

    default_error_messages = {"invalid": "Not a valid ISO-8601 datetime."}

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return isoformat_z(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise self.make_error("invalid") from exc
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed


class DisplayName(fields.String):
    """A file name kept for display only, never used as a path.

    Path components, control characters and invisible bidi/zero-width characters are dropped and
    the result is cut to 255 UTF-8 bytes, keeping the extension.
    """

    default_error_messages = {"empty": "Must contain a visible file name."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        name = sanitize_display_name(text)
        if not name:
            raise self.make_error("empty")
        return name


def sanitize_display_name(raw: str) -> str:
    text = unicodedata.normalize("NFC", raw)
    text = _INVISIBLE.sub("", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cs", "Co"))
    text = re.split(r"[/\\]", text)[-1].strip().strip(".").strip()
    return _truncate_utf8(text, MAX_NAME_BYTES)


def _truncate_utf8(name: str, limit: int) -> str:
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = limit - len(suffix.encode())
    cut = stem.encode()[:budget].decode(errors="ignore")
    return cut + suffix


class Folder(fields.String):
    """A slash-separated folder path such as ``courses/42/slides``; ``None`` is the root."""

    default_error_messages = {
        "segment": "Each folder segment must be 1-128 visible characters, not '.' or '..'.",
        "length": "Must be at most 1024 characters.",
    }

    # A blank folder is "no folder" (None), which String's signature does not foresee.
    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> str | None:
        text = super()._deserialize(value, attr, data, **kwargs).strip().strip("/")
        if not text:
            return None
        if len(text) > 1024:
            raise self.make_error("length")
        segments = text.split("/")
        for segment in segments:
            if (
                not segment
                or segment in (".", "..")
                or len(segment) > 128
                or _INVISIBLE.search(segment)
                or any(unicodedata.category(ch) == "Cc" for ch in segment)
                or "\\" in segment
            ):
                raise self.make_error("segment")
        return "/".join(segments)


class Tag(fields.String):
    """Tags compare case-insensitively, so they are stored lower-cased and trimmed."""

    default_error_messages = {"tag": "Each tag must be 1-64 visible characters."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip().lower()
        if (
            not text
            or len(text) > 64
            or _INVISIBLE.search(text)
            or any(unicodedata.category(ch) == "Cc" for ch in text)
        ):
            raise self.make_error("tag")
        return text


class Metadata(fields.Dict):
    """A caller-owned JSON object of at most 64 KiB serialised."""

    default_error_messages = {
        "too_large": f"Must be at most {MAX_METADATA_BYTES} bytes as JSON.",
        "not_json": "Must be a JSON object.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        result = super()._deserialize(value, attr, data, **kwargs)
        try:
            encoded = json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise self.make_error("not_json") from exc
        if len(encoded.encode()) > MAX_METADATA_BYTES:
            raise self.make_error("too_large")
        return result


class StrictBoolean(fields.Boolean):
    """Only real JSON booleans: "yes" or 1 for a boolean is more likely a bug than intent.

    (``truthy={True}`` alone is not enough: ``1 == True`` in Python.)
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def strict_bool(**kwargs: Any) -> fields.Boolean:
    return StrictBoolean(**kwargs)


__all__ = [
    "MAX_METADATA_BYTES",
    "DisplayName",
    "Folder",
    "Metadata",
    "Tag",
    "UtcDateTime",
    "ValidationError",
    "sanitize_display_name",
    "strict_bool",
]
