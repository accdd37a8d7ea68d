"""The unit of work: events are due for publishing only once their transaction committed."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.media.core.models import OutboxEvent
from services.media.core.unit_of_work import UnitOfWork


def _outbox_rows(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(OutboxEvent))


def test_a_committed_transaction_hands_over_its_events_once(sessions):
    work = UnitOfWork(sessions)
    with work.transaction() as session:
        first = work.record(session, "media_created", media={"id": "a"})
        second = work.record(session, "media_updated", media={"id": "a"})
        assert work.committed == ()  # not before the commit
    assert work.committed == (first, second)
    assert work.take_committed() == [first, second]
    assert work.take_committed() == []
    assert _outbox_rows(sessions) == 2


def test_a_rolled_back_transaction_leaves_no_event_anywhere(sessions):
    work = UnitOfWork(sessions)
    with work.transaction() as session:
        kept = work.record(session, "media_created", media={"id": "a"})
    with pytest.raises(RuntimeError, match="boom"), work.transaction() as session:
        work.record(session, "media_removed", media={"id": "a"})
        raise RuntimeError("boom")
    assert work.take_committed() == [kept]
    assert _outbox_rows(sessions) == 1


def test_events_are_recorded_only_inside_a_transaction(sessions):
    work = UnitOfWork(sessions)
    with sessions.begin() as session, pytest.raises(RuntimeError, match="inside"):
        work.record(session, "media_created", media={"id": "a"})
