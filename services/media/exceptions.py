"""The typed errors of the media service contract.

These classes cross RPC by name: a caller sees ``RemoteError`` whose ``exc_type`` is the class name,
or the class itself when it imports :mod:`services.media.client`. Their ``args`` are what nameko
serialises, so every constructor argument must be JSON-safe and enough to rebuild the error.
"""

from __future__ import annotations

from typing import Any


class MediaError(Exception):
    """Base of every error the service reports on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(MediaError):
    """An argument is missing, unknown, of the wrong type or out of range.

    ``fields`` maps each bad wire field (camelCase, dotted for nested ones) to its messages.
    """

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or {}
        self.args = (message, self.fields)

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ValidationError:
        flat = _flatten(fields)
        summary = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in sorted(flat.items()))
        return cls(f"invalid fields: {summary}", flat)

    @classmethod
    def for_field(cls, field: str, message: str) -> ValidationError:
        return cls.from_fields({field: [message]})


class NotFound(MediaError):
    """No such media, or a private one of another user (indistinguishable on purpose)."""


class Forbidden(MediaError):
    """The caller may see the media but not do this to it."""


class Conflict(MediaError):
    """A stale ``expectedUpdatedAt``, or an idempotency key reused with another payload."""


class PayloadTooLarge(MediaError):
    """The file or the RPC payload is over the configured limit."""


class UnsupportedMediaType(MediaError):
    """The content's sniffed type is not allowed, or contradicts the declared type."""


class QuotaExceeded(MediaError):
    """The owner's storage quota would be exceeded."""


class StorageUnavailable(MediaError):
    """The file store or the database cannot be reached right now; the call may be retried."""


CONTRACT_ERRORS: tuple[type[MediaError], ...] = (
    ValidationError,
    NotFound,
    Forbidden,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    QuotaExceeded,
    StorageUnavailable,
)

# The HTTP status of each contract error, for every HTTP route (the file endpoint, tus).
HTTP_STATUS: tuple[tuple[type[MediaError], int], ...] = (
    (ValidationError, 400),
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (QuotaExceeded, 413),
    (UnsupportedMediaType, 415),
    (StorageUnavailable, 503),
)


def http_status(exc: MediaError) -> int:
    """The HTTP status a route answers ``exc`` with; 500 for an error the contract lacks."""
    return next((code for kind, code in HTTP_STATUS if isinstance(exc, kind)), 500)


def _flatten(fields: dict[str, Any], prefix: str = "") -> dict[str, list[str]]:
    """marshmallow nests errors of nested fields; callers want one level of dotted names."""
    flat: dict[str, list[str]] = {}
    for name, value in fields.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{key}."))
        elif isinstance(value, list | tuple):
            messages = [str(v) for v in value if not isinstance(v, dict)]
            for v in value:
                if isinstance(v, dict):
                    flat.update(_flatten(v, f"{key}."))
            if messages:
                flat[key] = messages
        else:
            flat[key] = [str(value)]
    return flat
