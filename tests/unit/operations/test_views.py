"""The read-only queue views shared by the admin CLI and the metrics, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import sessionmaker

from services.media.core.ids import utcnow, uuid7
from services.media.core.models import Media, OutboxEvent, UploadSession
from services.media.operations import views as operations
from services.media.operations.views import Backlog

ALL_UPLOAD_STATES = {
    "PENDING",
    "UPLOADING",
    "VERIFYING",
    "READY",
    "FAILED",
    "CANCELLED",
    "EXPIRED",
}


def add_media(
    sessions: sessionmaker,
    *,
    status: str = "READY",
    age: float = 0.0,
    storage_key: str | None = None,
    mime_type: str = "image/png",
    media_type: str = "IMAGE",
    **fields: Any,
) -> str:
    """A media row as the catalog leaves it, created ``age`` seconds ago."""
    created = utcnow() - timedelta(seconds=age)
    media_id = uuid7()
    values: dict[str, Any] = {
        "id": media_id,
        "type": media_type,
        "status": status,
        "original_name": "cat.png",
        "mime_type": mime_type,
        "size": 10,
        "checksum": None,
        "storage_key": storage_key,
        "user_id": "u-1",
        "is_public": False,
        "meta": {},
        "tags": [],
        "created_at": created,
        "updated_at": created,
        "processing_attempts": 0,
        "variant_list": [],
    }
    values.update(fields)
    with sessions.begin() as session:
        session.add(Media(**values))
    return media_id


def add_event(
    sessions: sessionmaker, event_type: str, *, age: float = 0.0, published: bool = False
) -> str:
    created = utcnow() - timedelta(seconds=age)
    event_id = uuid7()
    with sessions.begin() as session:
        session.add(
            OutboxEvent(
                id=event_id,
                event_type=event_type,
                payload={"eventId": event_id},
                created_at=created,
                published_at=created if published else None,
                attempts=0,
            )
        )
    return event_id


def add_upload(sessions: sessionmaker, status: str, *, age: float = 0.0, idle: float = 0.0) -> str:
    now = utcnow()
    upload_id = uuid7()
    with sessions.begin() as session:
        session.add(
            UploadSession(
                id=upload_id,
                user_id="u-1",
                status=status,
                original_name="big.mp4",
                mime_type=None,
                size=1000,
                checksum=None,
                chunk_size=100,
                storage_key=f"media/uploads/{upload_id}",
                storage_upload_id="",
                params={},
                created_at=now - timedelta(seconds=age),
                updated_at=now - timedelta(seconds=idle),
                transfer="service",
            )
        )
    return upload_id


@contextmanager
def statements(sessions: sessionmaker) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs."""
    sent: list[str] = []
    engine = sessions.kw["bind"]

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def about(value: float | None, expected: float, slack: float = 30.0) -> bool:
    return value is not None and expected <= value < expected + slack


def test_nothing_waiting(sessions):
    assert operations.processing_backlog(sessions) == Backlog(0, None)
    assert operations.outbox_backlog(sessions) == Backlog(0, None)
    assert operations.outbox_by_type(sessions) == {}
    assert operations.upload_sessions_by_state(sessions) == dict.fromkeys(ALL_UPLOAD_STATES, 0)
    assert operations.processing_jobs(sessions) == []
    assert operations.upload_sessions(sessions) == []


def test_processing_backlog_counts_live_processing_media_from_the_oldest_creation(sessions):
    add_media(sessions, status="PROCESSING", age=50)
    add_media(sessions, status="PROCESSING", age=100)
    add_media(sessions, status="READY", age=5000)
    add_media(sessions, status="FAILED", age=6000)
    # Not possible through the catalog (a deleted media is DELETED), but the filter must hold.
    add_media(sessions, status="PROCESSING", age=9000, deleted_at=utcnow())

    backlog = operations.processing_backlog(sessions)

    assert backlog.count == 2
    assert about(backlog.oldest_age_seconds, 100)


def test_outbox_backlog_and_its_types_count_only_unpublished_events(sessions):
    add_event(sessions, "media_created", age=30)
    add_event(sessions, "media_created", age=10)
    add_event(sessions, "media_updated", age=20)
    add_event(sessions, "media_purged", age=900, published=True)

    backlog = operations.outbox_backlog(sessions)

    assert backlog.count == 3
    assert about(backlog.oldest_age_seconds, 30)
    assert operations.outbox_by_type(sessions) == {"media_created": 2, "media_updated": 1}


def test_upload_sessions_by_state_lists_every_state_with_zeros(sessions):
    for status in ("PENDING", "UPLOADING", "UPLOADING", "EXPIRED", "READY"):
        add_upload(sessions, status)

    counts = operations.upload_sessions_by_state(sessions)

    assert counts == {
        "PENDING": 1,
        "UPLOADING": 2,
        "VERIFYING": 0,
        "READY": 1,
        "FAILED": 0,
        "CANCELLED": 0,
        "EXPIRED": 1,
    }
    assert list(counts) == list(operations.UPLOAD_STATES)


def test_the_upload_states_are_the_vocabulary_in_the_order_of_a_session_s_life():
    assert operations.UPLOAD_STATES == (
        "PENDING", "UPLOADING", "VERIFYING", "READY", "FAILED", "CANCELLED", "EXPIRED",
    )  # fmt: skip
    assert set(operations.UPLOAD_STATES) == ALL_UPLOAD_STATES


def test_processing_jobs_oldest_first_with_attempts_and_lease(sessions):
    lease = utcnow() + timedelta(minutes=5)
    newer = add_media(sessions, status="PROCESSING", age=10)
    oldest = add_media(
        sessions,
        status="PROCESSING",
        age=300,
        processing_attempts=2,
        processing_lease_until=lease,
        processing_claim=uuid7(),
    )
    middle = add_media(
        sessions,
        status="PROCESSING",
        age=200,
        processing_attempts=1,
        processing_lease_until=utcnow() - timedelta(minutes=1),
    )
    add_media(sessions, status="READY", age=1000)

    jobs = operations.processing_jobs(sessions)

    assert [job.media_id for job in jobs] == [oldest, middle, newer]
    first = jobs[0]
    assert (first.attempts, first.lease_until, first.leased) == (2, lease, True)
    assert about(first.age_seconds, 300)
    assert isinstance(first.created_at, datetime)
    assert (jobs[1].attempts, jobs[1].leased) == (1, False)  # its lease ran out: free again
    assert (jobs[2].lease_until, jobs[2].leased) == (None, False)
    assert [job.media_id for job in operations.processing_jobs(sessions, limit=2)] == [
        oldest,
        middle,
    ]


def test_upload_sessions_lists_the_ones_under_way_oldest_first(sessions):
    newer = add_upload(sessions, "UPLOADING", age=60, idle=5)
    oldest = add_upload(sessions, "PENDING", age=600, idle=600)
    verifying = add_upload(sessions, "VERIFYING", age=120, idle=100)
    done = add_upload(sessions, "READY", age=6000)
    add_upload(sessions, "EXPIRED", age=9000)

    listed = operations.upload_sessions(sessions)

    assert [row.upload_id for row in listed] == [oldest, verifying, newer]
    assert listed[0].status == "PENDING"
    assert about(listed[0].age_seconds, 600)
    assert about(listed[1].idle_seconds, 100)
    assert (listed[2].size, listed[2].transfer, listed[2].user_id) == (1000, "service", "u-1")
    assert [row.upload_id for row in operations.upload_sessions(sessions, limit=1)] == [oldest]
    assert [row.upload_id for row in operations.upload_sessions(sessions, states=("READY",))] == [
        done
    ]


def test_every_view_is_one_query(sessions):
    add_media(sessions, status="PROCESSING", age=5)
    add_event(sessions, "media_created")
    add_upload(sessions, "PENDING")
    views = [
        operations.processing_backlog,
        operations.outbox_backlog,
        operations.outbox_by_type,
        operations.upload_sessions_by_state,
        operations.processing_jobs,
        operations.upload_sessions,
    ]
    for view in views:
        with statements(sessions) as sent:
            view(sessions)
        selects = [s for s in sent if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1, (view.__name__, sent)
