"""Where the bytes of media live: a small blob-store interface and its backends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storage.base import ObjectInfo, Storage, StoredObject, new_key, validate_key
from storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from storage.local import LocalStorage

__all__ = [
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "build_storage",
    "new_key",
    "validate_key",
]

BACKENDS = ("local",)


def build_storage(settings: Mapping[str, Any]) -> Storage:
    """The backend named by ``STORAGE_BACKEND`` (default ``"local"``), configured from settings."""
    backend = settings.get("STORAGE_BACKEND", "local")
    if backend == "local":
        root = settings.get("STORAGE_ROOT")
        if not root:
            raise ValueError("STORAGE_ROOT must be set for the 'local' storage backend")
        return LocalStorage(root=root)
    raise ValueError(f"unknown STORAGE_BACKEND {backend!r}; expected one of: {', '.join(BACKENDS)}")
