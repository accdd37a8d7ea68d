"""What a sibling service imports to call ``media``.

Importing this module registers the contract's error classes with nameko, so a caller's
``except NotFound`` works instead of inspecting ``RemoteError.exc_type``::

    from services.media.client import NotFound, media_rpc

    with media_rpc(config, timeout=5, user_id="u-1") as media:
        try:
            media.findOne(media_id)
        except NotFound:
            ...

Inside a nameko service use ``RpcProxy("media")`` as usual; the registration applies there too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nameko.exceptions import deserialize_to_instance
from nameko.standalone.rpc import ClusterRpcProxy

from services.media.exceptions import (
    CONTRACT_ERRORS,
    Conflict,
    Forbidden,
    MediaError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StorageUnavailable,
    UnsupportedMediaType,
    ValidationError,
)

SERVICE_NAME = "media"

for _error in CONTRACT_ERRORS:
    deserialize_to_instance(_error)


@contextmanager
def media_rpc(
    config: dict[str, Any],
    *,
    timeout: float = 30.0,
    user_id: str | None = None,
    roles: list[str] | None = None,
) -> Iterator[Any]:
    """A standalone proxy to the media service, acting for ``user_id`` (or trusted if None).

    One proxy per green thread: a standalone proxy must not be shared between them.
    """
    context_data: dict[str, Any] = {}
    if user_id is not None:
        context_data["user_id"] = user_id
    if roles:
        context_data["roles"] = list(roles)
    with ClusterRpcProxy(config, timeout=timeout, context_data=context_data) as cluster:
        yield getattr(cluster, SERVICE_NAME)


__all__ = [
    "SERVICE_NAME",
    "Conflict",
    "Forbidden",
    "MediaError",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "StorageUnavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "media_rpc",
]
