from __future__ import annotations

from typing import Any

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services.media.catalog.records import MediaCatalog
from services.media.core.identity import Caller
from services.media.core.models import IdempotencyKey, Media, OutboxEvent
from services.media.service import MediaService
from storage import LocalStorage


class Dispatched(list):
    """Stands in for the broker in unit tests: records what the service published."""

    def __call__(self, event_type: str, payload: dict[str, Any]) -> None:
        self.append((event_type, payload))

    def types(self) -> list[str]:
        return [event_type for event_type, _ in self]


@pytest.fixture
def dispatched() -> Dispatched:
    return Dispatched()


@pytest.fixture
def service(catalog: MediaCatalog, dispatched: Dispatched) -> MediaService:
    """The real entrypoints over a real catalog, database and disk, acting for user ``u-1``."""
    return worker_factory(
        MediaService,
        catalog=catalog,
        caller=Caller("u-1"),
        dispatch=dispatched,
        delivery_id=None,  # a fresh request message; tests of redelivery set one
    )


def act_as(service: MediaService, user_id: str | None, *roles: str) -> MediaService:
    service.caller = Caller(user_id, frozenset(roles))
    return service


class Written:
    def __init__(self, sessions: sessionmaker, storage: LocalStorage) -> None:
        self.sessions = sessions
        self.storage = storage

    def counts(self) -> dict[str, int]:
        with self.sessions() as session:
            return {
                model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (Media, OutboxEvent, IdempotencyKey)
            } | {"objects": len(list(self.storage.iter_objects()))}

    def assert_nothing(self) -> None:
        assert self.counts() == {
            "media": 0,
            "outbox_events": 0,
            "idempotency_keys": 0,
            "objects": 0,
        }


@pytest.fixture
def written(sessions: sessionmaker, storage: LocalStorage) -> Written:
    return Written(sessions, storage)


def without_signed_url(record: dict[str, Any]) -> dict[str, Any]:
    """A record minus its ``url``: a private record's link is signed afresh on every answer, so
    two answers a second apart carry different expiries for the same record."""
    return {name: value for name, value in record.items() if name != "url"}
