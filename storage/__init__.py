"""Where the bytes of media live: a small blob-store interface and its backends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storage.base import (
    MAX_PART_NUMBER,
    MIN_PART_SIZE,
    ObjectInfo,
    PartInfo,
    Storage,
    StoredObject,
    new_key,
    validate_key,
)
from storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from storage.local import LocalStorage

__all__ = [
    "MAX_PART_NUMBER",
    "MIN_PART_SIZE",
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "PartInfo",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "build_storage",
    "new_key",
    "validate_key",
]

BACKENDS = ("local", "s3")


def build_storage(settings: Mapping[str, Any]) -> Storage:
    """The backend named by ``STORAGE_BACKEND`` (default ``"local"``), configured from settings.

    ``local``: ``STORAGE_ROOT``. ``s3``: ``S3_BUCKET``, and optionally ``S3_ENDPOINT_URL``,
    ``S3_REGION``, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``.
    """
    backend = settings.get("STORAGE_BACKEND", "local")
    if backend == "local":
        root = settings.get("STORAGE_ROOT")
        if not root:
            raise ValueError("STORAGE_ROOT must be set for the 'local' storage backend")
        return LocalStorage(root=root)
    if backend == "s3":
        bucket = settings.get("S3_BUCKET")
        if not bucket:
            raise ValueError("S3_BUCKET must be set for the 's3' storage backend")
        # Imported here, not at the top: importing boto3 before eventlet's monkey patch breaks
        # SSL (RecursionError), and `import storage` must stay safe to do first.
        from storage.s3 import S3Storage

        # Empty strings (unset ${VAR:} in config.yml) mean "not set": boto3's defaults apply.
        return S3Storage(
            bucket=bucket,
            endpoint_url=settings.get("S3_ENDPOINT_URL") or None,
            region=settings.get("S3_REGION") or None,
            access_key_id=settings.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
        )
    raise ValueError(f"unknown STORAGE_BACKEND {backend!r}; expected one of: {', '.join(BACKENDS)}")
