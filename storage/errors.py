"""Errors raised by storage backends.

Constructors take the facts (key, reason) and ``args`` holds exactly those, so an error can be
pickled or copied and rebuilt; ``str()`` gives the human message.
"""

from __future__ import annotations

_MAX_KEY_IN_MESSAGE = 100


def _show(key: object) -> str:
    # Keys can come from users: cap their size in messages and logs.
    text = repr(key)
    if len(text) > _MAX_KEY_IN_MESSAGE:
        text = text[: _MAX_KEY_IN_MESSAGE - 3] + "..."
    return text


class StorageError(Exception):
    """Base of every error a storage backend raises on purpose."""


class ObjectNotFound(StorageError):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"object {_show(self.key)} not found"


class StorageUnavailable(StorageError):
    """The backend cannot be used right now (disk full, read-only, unreachable, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"storage unavailable: {self.reason}"


class InvalidKey(StorageError, ValueError):
    """The key is malformed or would escape the storage area."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid key {_show(self.key)}: {self.reason}"
