"""Transactional outbox: events are rows written in the transaction of the change they report.

A worker publishes its own events right after commit; a relay on a timer publishes whatever is
still pending (the broker was away, or the process died between commit and publish). A row is
marked published only after the broker confirmed it, so delivery is at least once and subscribers
de-duplicate on ``eventId``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session, sessionmaker

from services.media.core.ids import isoformat_z, utcnow, uuid7
from services.media.core.models import OutboxEvent

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], None]

# Rows younger than this belong to the worker that wrote them; the relay leaves them alone.
RELAY_MIN_AGE = timedelta(seconds=2)
KEEP_PUBLISHED = timedelta(days=7)


def record_event(session: Session, event_type: str, **body: Any) -> str:
    """Add an event to the caller's transaction; it exists only if that transaction commits.

    ``body`` is the event's own part of the payload (``media=...``, ``changes=...``).
    """
    now = utcnow()
    event_id = uuid7()
    payload: dict[str, Any] = {"eventId": event_id, "occurredAt": isoformat_z(now)}
    payload.update({key: value for key, value in body.items() if value is not None})
    session.add(OutboxEvent(id=event_id, event_type=event_type, payload=payload, created_at=now))
    return event_id


def publish_pending(
    sessions: sessionmaker[Session],
    publish: Publish,
    *,
    event_ids: Iterable[str] | None = None,
    min_age: timedelta | None = None,
    limit: int = 100,
) -> int:
    """Publish pending events in creation order; returns how many were published.

    Rows are claimed with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so several service instances can
    relay at once without publishing a row twice. The batch stops at
    the first failure, keeping order.
    """
    published = 0
    with sessions.begin() as session:
        query = select(OutboxEvent).where(OutboxEvent.published_at.is_(None))
        if event_ids is not None:
            ids = list(event_ids)
            if not ids:
                return 0
            query = query.where(OutboxEvent.id.in_(ids))
        if min_age is not None:
            query = query.where(OutboxEvent.created_at <= utcnow() - min_age)
        query = (
            query.order_by(OutboxEvent.created_at, OutboxEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        for row in session.scalars(query):
            try:
                publish(row.event_type, row.payload)
            except Exception:
                row.attempts += 1
                log.warning(
                    "could not publish %s %s (attempt %d); the relay will retry",
                    row.event_type,
                    row.id,
                    row.attempts,
                    exc_info=True,
                )
                break
            row.published_at = utcnow()
            published += 1
    return published


def prune_published(sessions: sessionmaker[Session], older_than: timedelta = KEEP_PUBLISHED) -> int:
    with sessions.begin() as session:
        result = session.execute(
            delete(OutboxEvent).where(
                OutboxEvent.published_at.is_not(None),
                OutboxEvent.published_at < utcnow() - older_than,
            )
        )
        return cast(CursorResult[Any], result).rowcount or 0
