"""Read-only views of the service's queues, for operators (``media-admin``) and metrics alike.

Each function is one query (an aggregate, or a short ordered list), never a scan in Python, so
a metrics scrape can call them often. No nameko here: they take a session factory.

Ages are seconds from a row's timestamp to now, both naive UTC as the columns store them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services.media.core.ids import utcnow
from services.media.core.models import Media, OutboxEvent, UploadSession
from services.media.core.vocabulary import UPLOAD_EXPIRABLE, MediaStatus, UploadStatus

# Every state an upload session can be in, in the order of its life.
UPLOAD_STATES: tuple[str, ...] = tuple(UploadStatus)


@dataclass(frozen=True)
class Backlog:
    """How many items wait, and how long the oldest has waited (None when nothing waits)."""

    count: int
    oldest_age_seconds: float | None


@dataclass(frozen=True)
class ProcessingJob:
    """A media in ``PROCESSING``: its job lives on the row."""

    media_id: str
    type: str
    mime_type: str
    attempts: int
    # Set while a worker holds the job; a lease in the past means the job is free again.
    lease_until: datetime | None
    created_at: datetime
    age_seconds: float

    @property
    def leased(self) -> bool:
        return self.lease_until is not None and self.lease_until > utcnow()


@dataclass(frozen=True)
class UploadSessionInfo:
    upload_id: str
    status: str
    user_id: str
    original_name: str
    size: int
    transfer: str
    created_at: datetime
    updated_at: datetime
    age_seconds: float
    idle_seconds: float


def processing_backlog(sessions: sessionmaker) -> Backlog:
    """Media waiting for processing (``PROCESSING``, not deleted).

    The age is taken from the oldest such media's ``created_at``: processing starts when a media
    is created, and jobs are claimed in ``created_at`` order. A media put back to ``PROCESSING``
    later (restored, or retried by an operator) therefore counts from its creation, not from
    when it re-entered the queue. The query is served by the ``(status, created_at)`` index.
    """
    with sessions() as session:
        count, oldest = session.execute(
            select(func.count(), func.min(Media.created_at)).where(
                Media.status == MediaStatus.PROCESSING, Media.deleted_at.is_(None)
            )
        ).one()
    return Backlog(int(count), _age(oldest))


def outbox_backlog(sessions: sessionmaker) -> Backlog:
    """Outbox events not published yet; the age is from the oldest one's ``created_at`` (when
    its change was recorded)."""
    with sessions() as session:
        count, oldest = session.execute(
            select(func.count(), func.min(OutboxEvent.created_at)).where(
                OutboxEvent.published_at.is_(None)
            )
        ).one()
    return Backlog(int(count), _age(oldest))


def outbox_by_type(sessions: sessionmaker) -> dict[str, int]:
    """Unpublished outbox events by event type (only the types that have some)."""
    with sessions() as session:
        rows = session.execute(
            select(OutboxEvent.event_type, func.count())
            .where(OutboxEvent.published_at.is_(None))
            .group_by(OutboxEvent.event_type)
            .order_by(OutboxEvent.event_type)
        ).all()
    return {event_type: int(count) for event_type, count in rows}


def upload_sessions_by_state(sessions: sessionmaker) -> dict[str, int]:
    """Upload sessions by status: every state in :data:`UPLOAD_STATES`, zero included (and any
    other status found in the table, after them)."""
    with sessions() as session:
        rows = session.execute(
            select(UploadSession.status, func.count()).group_by(UploadSession.status)
        ).all()
    counts = dict.fromkeys(UPLOAD_STATES, 0)
    for status, count in sorted(rows):
        counts[status] = int(count)
    return counts


def processing_jobs(sessions: sessionmaker, limit: int = 50) -> list[ProcessingJob]:
    """The ``limit`` oldest media in ``PROCESSING`` (not deleted), oldest first."""
    now = utcnow()
    with sessions() as session:
        rows = session.execute(
            select(
                Media.id,
                Media.type,
                Media.mime_type,
                Media.processing_attempts,
                Media.processing_lease_until,
                Media.created_at,
            )
            .where(Media.status == MediaStatus.PROCESSING, Media.deleted_at.is_(None))
            .order_by(Media.created_at, Media.id)
            .limit(limit)
        ).all()
    return [
        ProcessingJob(
            media_id=media_id,
            type=media_type,
            mime_type=mime_type,
            attempts=int(attempts or 0),
            lease_until=lease_until,
            created_at=created_at,
            age_seconds=_seconds(now - created_at),
        )
        for media_id, media_type, mime_type, attempts, lease_until, created_at in rows
    ]


def upload_sessions(
    sessions: sessionmaker,
    limit: int = 50,
    states: tuple[str, ...] = UPLOAD_EXPIRABLE,
) -> list[UploadSessionInfo]:
    """The ``limit`` oldest upload sessions in ``states`` (by default the ones under way:
    ``PENDING``, ``UPLOADING``, ``VERIFYING``), oldest first. ``idle_seconds`` is the time since
    the session last changed (``updated_at``), which is what expiry goes by."""
    now = utcnow()
    with sessions() as session:
        rows = session.execute(
            select(
                UploadSession.id,
                UploadSession.status,
                UploadSession.user_id,
                UploadSession.original_name,
                UploadSession.size,
                UploadSession.transfer,
                UploadSession.created_at,
                UploadSession.updated_at,
            )
            .where(UploadSession.status.in_(states))
            .order_by(UploadSession.created_at, UploadSession.id)
            .limit(limit)
        ).all()
    return [
        UploadSessionInfo(
            upload_id=row.id,
            status=row.status,
            user_id=row.user_id,
            original_name=row.original_name,
            size=int(row.size),
            transfer=row.transfer,
            created_at=row.created_at,
            updated_at=row.updated_at,
            age_seconds=_seconds(now - row.created_at),
            idle_seconds=_seconds(now - row.updated_at),
        )
        for row in rows
    ]


def _age(oldest: datetime | None) -> float | None:
    if oldest is None:
        return None
    return _seconds(utcnow() - oldest)


def _seconds(delta: timedelta) -> float:
    # A clock a little behind the one that wrote the row must not give a negative age.
    return max(0.0, delta.total_seconds())


__all__ = [
    "UPLOAD_STATES",
    "Backlog",
    "ProcessingJob",
    "UploadSessionInfo",
    "outbox_backlog",
    "outbox_by_type",
    "processing_backlog",
    "processing_jobs",
    "upload_sessions",
    "upload_sessions_by_state",
]
