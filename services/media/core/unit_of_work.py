"""One unit of work: a database transaction and the events recorded in it.

Domain code changes rows and records events inside :meth:`UnitOfWork.transaction`. An event is
written to the outbox table in that same transaction, and becomes due for publishing only when
the transaction commits; a rollback forgets it with the rows. After each call the service takes
the committed event ids (:meth:`take_committed`) and hands them to the outbox publisher; what it
cannot publish, the relay timer publishes later. Nothing else keeps a list of events.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.media.core.outbox import record_event

_RECORDED = "media_recorded_events"


class UnitOfWork:
    """Transactions over ``sessions`` and the events their commits made due; one per worker."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._committed: list[str] = []

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction: committed on leaving, rolled back on an exception."""
        recorded: list[str] = []
        with self.sessions.begin() as session:
            session.info[_RECORDED] = recorded
            yield session
        # Reached only once the commit went through.
        self._committed.extend(recorded)

    def record(self, session: Session, event_type: str, **body: Any) -> str:
        """Write the event into ``session``'s transaction; returns its id."""
        recorded = session.info.get(_RECORDED)
        if recorded is None:
            raise RuntimeError("events are recorded inside UnitOfWork.transaction() only")
        event_id = record_event(session, event_type, **body)
        recorded.append(event_id)
        return event_id

    @property
    def committed(self) -> tuple[str, ...]:
        """Ids of the events committed and not yet taken."""
        return tuple(self._committed)

    def take_committed(self) -> list[str]:
        """The committed events not yet handed to the publisher, handed over now."""
        taken, self._committed = self._committed, []
        return taken
