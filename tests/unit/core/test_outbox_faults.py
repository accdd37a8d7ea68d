"""What happens when the database or the broker is away."""

from __future__ import annotations

from datetime import timedelta

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.media.catalog.records import MediaCatalog
from services.media.core.database import make_engine
from services.media.core.identity import Caller
from services.media.core.models import OutboxEvent
from services.media.exceptions import StorageUnavailable
from services.media.service import MediaService
from tests.files import upload_data
from tests.unit.conftest import Dispatched

# Nothing listens on port 1: connecting fails at once, like a database that is down.
UNREACHABLE_DATABASE = "postgresql://media@127.0.0.1:1/media?connect_timeout=2"


@pytest.fixture
def service_without_database(storage, settings, dispatched):
    engine = make_engine(UNREACHABLE_DATABASE)
    catalog = MediaCatalog(
        sessions=sessionmaker(bind=engine, expire_on_commit=False),
        storage=storage,
        settings=settings,
    )
    yield worker_factory(
        MediaService, catalog=catalog, caller=Caller("u-1"), dispatch=dispatched, delivery_id=None
    )
    engine.dispose()


@pytest.mark.parametrize("extra", [{}, {"idempotencyKey": "k"}])
def test_upload_with_the_database_down_is_storage_unavailable_and_leaves_no_file(
    service_without_database, storage, dispatched, extra
):
    with pytest.raises(StorageUnavailable, match="database is unavailable"):
        service_without_database.upload_file(upload_data(**extra))
    assert list(storage.iter_objects()) == []
    assert dispatched == []


def _age_outbox(sessions: sessionmaker, seconds: float) -> None:
    with sessions.begin() as session:
        for row in session.scalars(select(OutboxEvent)):
            row.created_at -= timedelta(seconds=seconds)


def _pending(sessions: sessionmaker) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(OutboxEvent.event_type)
                .where(OutboxEvent.published_at.is_(None))
                # Written order: without ORDER BY, PostgreSQL returns rows as they lie, and a
                # failed attempt's UPDATE moves a row.
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
            )
        )


def test_a_committed_change_keeps_its_event_while_the_broker_is_away(service, sessions):
    def broker_away(event_type, payload):
        raise ConnectionError("broker unreachable")

    service.dispatch = broker_away
    media = service.upload_file(upload_data())  # the caller still gets its answer
    service.update(media["id"], {"caption": "x"})
    assert _pending(sessions) == ["media_created", "media_updated"]

    delivered = Dispatched()
    service.dispatch = delivered
    service.relay_outbox()
    assert delivered == []  # too young: the worker that wrote them may still be publishing
    _age_outbox(sessions, 10)
    service.relay_outbox()
    assert delivered.types() == ["media_created", "media_updated"]
    assert delivered[0][1]["media"]["id"] == media["id"]
    assert _pending(sessions) == []
    service.relay_outbox()
    assert delivered.types() == ["media_created", "media_updated"]  # published once


def test_relay_keeps_order_and_stops_at_the_first_failure(service, sessions):
    service.dispatch = lambda *_: (_ for _ in ()).throw(ConnectionError("away"))
    media = service.upload_file(upload_data())
    service.update(media["id"], {"caption": "x"})
    service.remove(media["id"])
    _age_outbox(sessions, 10)

    calls = Dispatched()

    def flaky(event_type, payload):
        calls(event_type, payload)
        if len(calls) == 2:
            raise ConnectionError("dropped mid-batch")

    service.dispatch = flaky
    service.relay_outbox()
    assert _pending(sessions) == ["media_updated", "media_removed"]
    service.dispatch = delivered = Dispatched()
    service.relay_outbox()
    assert delivered.types() == ["media_updated", "media_removed"]


def test_a_rolled_back_change_has_no_event(service, sessions, dispatched):
    media = service.upload_file(upload_data())
    with pytest.raises(Exception, match="changed since"):
        service.update(media["id"], {"caption": "x", "expectedUpdatedAt": "2000-01-01T00:00:00Z"})
    assert dispatched.types() == ["media_created"]
    with sessions() as session:
        assert session.scalars(select(OutboxEvent.event_type)).all() == ["media_created"]
