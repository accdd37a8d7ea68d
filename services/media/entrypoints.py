"""How the service's entrypoints are made: the RPC decorator with the contract's errors and the
boundary, the translation of infrastructure errors into contract errors, and the timers' drain.
Nameko-facing, like ``dependencies``; the domain never imports it."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.wrappers import Response

from services.media.core.outbox import Publish, publish_pending
from services.media.core.unit_of_work import UnitOfWork
from services.media.dependencies import rpc
from services.media.exceptions import CONTRACT_ERRORS, NotFound
from services.media.exceptions import StorageUnavailable as ContractStorageUnavailable
from storage import ObjectNotFound, StorageUnavailable

log = logging.getLogger(__name__)

Method = TypeVar("Method", bound=Callable[..., Any])


class HasBoundary(Protocol):
    def boundary(self) -> Any: ...


def method(function: Method) -> Method:
    """``@rpc`` with the contract's errors expected, run inside the service's ``boundary()``.

    The wrapper keeps the method's signature, so nameko still answers a call with the wrong
    arguments with ``IncorrectSignature`` before anything runs.
    """

    @functools.wraps(function)
    def call(self: HasBoundary, *args: Any, **kwargs: Any) -> Any:
        with self.boundary():
            return function(self, *args, **kwargs)

    call.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    return rpc(expected_exceptions=CONTRACT_ERRORS)(call)


@contextmanager
def contract_errors() -> Iterator[None]:
    """Storage and database failures as the contract's errors; other errors pass through."""
    try:
        yield
    except ObjectNotFound as exc:
        raise NotFound(str(exc)) from None
    except StorageUnavailable as exc:
        log.warning("storage unavailable: %s", exc)
        raise ContractStorageUnavailable(str(exc)) from None
    except DBAPIError as exc:
        if not exc.connection_invalidated and not isinstance(
            exc, OperationalError | InterfaceError
        ):
            raise
        log.warning("database unavailable: %s", exc)
        raise ContractStorageUnavailable("the media database is unavailable; retry later") from None


def drain(job: Callable[..., int], batch: int) -> int:
    """Run ``job(limit=batch)`` until a run handles less than a full batch; how many in all."""
    total = 0
    while (done := job(limit=batch)) >= batch:
        total += done
    return total + done


def uncached(body: str | bytes, content_type: str, status: int = 200) -> Response:
    """An answer about the service's state now, which no cache may keep."""
    response = Response(body, status=status)
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    return response


def publish_committed(work: UnitOfWork, sessions: sessionmaker[Session], publish: Publish) -> None:
    """Publish the events the worker's transactions committed, right after its call."""
    event_ids = work.take_committed()
    if not event_ids:
        return
    try:
        publish_pending(sessions, publish, event_ids=event_ids)
    except Exception:
        # Committed events stay in the outbox; the relay publishes them.
        log.warning("deferred %d events to the outbox relay", len(event_ids), exc_info=True)
