"""Time-ordered ids (UUIDv7, RFC 9562) and UTC clock helpers."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A UUIDv7 string; ids made in one process sort in creation order, even within a millisecond.

    The 12-bit ``rand_a`` field holds a counter (RFC 9562 method 1) so two ids of the same
    millisecond still sort by creation, which keyset pagination on ``(createdAt, id)`` relies on.
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave headroom
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def utcnow() -> datetime:
    """Naive UTC with microseconds: what the columns store on SQLite and PostgreSQL alike."""
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat_z(value: datetime | None) -> str | None:
    """ISO-8601 UTC ending in ``Z``, as the wire wants."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"
