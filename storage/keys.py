"""Object keys: the ones the service makes, and the check every backend applies to any key."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from storage.errors import InvalidKey

MAX_KEY_LENGTH = 512
# Every key new_key makes starts with this: what lies elsewhere was not written by the service.
GENERATED_KEY_PREFIX = "media/"

_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,511}")


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


def is_valid_key(key: str) -> bool:
    """Whether ``key`` passes :func:`validate_key`: listings skip names no key can have."""
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return True
