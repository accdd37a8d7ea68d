"""Where the bytes of media live: a small blob-store interface and its backends.

A backend is one module with one :class:`Storage` subclass, named in :data:`BACKENDS` and
imported only when it is configured (importing boto3 before eventlet's monkey patch breaks SSL,
so ``import storage`` must stay safe to do first). Optional abilities are the protocols of
:mod:`storage.capabilities`. This package never imports the service.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from storage.base import (
    MAX_PART_NUMBER,
    MIN_PART_SIZE,
    ObjectInfo,
    PartInfo,
    Storage,
    StoredObject,
)
from storage.capabilities import DirectUploads, PresignedReads
from storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from storage.keys import GENERATED_KEY_PREFIX, is_valid_key, new_key, validate_key
from storage.local import LocalStorage

__all__ = [
    "BACKENDS",
    "GENERATED_KEY_PREFIX",
    "MAX_PART_NUMBER",
    "MIN_PART_SIZE",
    "DirectUploads",
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "PartInfo",
    "PresignedReads",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "build_storage",
    "is_valid_key",
    "new_key",
    "validate_key",
]

# STORAGE_BACKEND name -> "module:Class".
BACKENDS: dict[str, str] = {
    "local": "storage.local:LocalStorage",
    "s3": "storage.s3:S3Storage",
}


def build_storage(settings: Mapping[str, Any]) -> Storage:
    """The backend named by ``STORAGE_BACKEND`` (default ``"local"``), configured from settings
    by its own ``from_settings``."""
    name = settings.get("STORAGE_BACKEND") or "local"
    target = BACKENDS.get(name)
    if target is None:
        raise ValueError(
            f"unknown STORAGE_BACKEND {name!r}; expected one of: {', '.join(BACKENDS)}"
        )
    module_name, class_name = target.split(":")
    backend: type[Storage] = getattr(importlib.import_module(module_name), class_name)
    return backend.from_settings(settings)
