"""Storage against records, both ways, and retention.

The sweeper deletes stored objects no record owns (past a grace period) and marks records whose
bytes vanished ``FAILED``; the purge removes soft-deleted media past the retention period,
bytes first, then the row and ``media_purged``; delivery keys older than a day are pruned.
Every change goes through the catalog's unit of work, so each has its event. Safe with several
instances running it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from services.media.catalog.records import OverCatalog, next_updated_at
from services.media.core.ids import utcnow
from services.media.core.models import IdempotencyKey, Media, MediaVariant, UploadSession
from services.media.core.vocabulary import UPLOAD_EXPIRABLE, MediaEvent, MediaStatus
from services.media.exceptions import Conflict
from storage import GENERATED_KEY_PREFIX

log = logging.getLogger(__name__)

T = TypeVar("T")

# A batch this big that is entirely missing means the store is misconfigured, not emptied.
SUSPICIOUS_BATCH = 20
STALE_UPLOAD_AGE = timedelta(days=1)
DELIVERY_KEY_TTL = timedelta(days=1)


class Hygiene(OverCatalog):
    """The sweeper and the purge over one catalog (its storage, sessions and unit of work)."""

    def sweep_orphans(
        self, batch_size: int = 500, *, dry_run: bool = False, report: list[str] | None = None
    ) -> int:
        """Delete stored objects no record owns, once they are older than the grace period.

        Only keys under ``media/`` are ours (``new_key``); objects registered with ``create`` may
        live elsewhere and are never touched. The grace period covers uploads whose bytes are
        written but whose record is not committed yet. Safe to run in several instances: a
        second delete of the same object is a no-op.

        ``dry_run`` deletes nothing and counts what would go; ``report`` receives those keys.
        """
        cutoff = datetime.now(UTC) - self.settings.orphan_grace
        deleted = 0
        listing = self.catalog.storage_io(self.storage.iter_objects, GENERATED_KEY_PREFIX)
        while batch := self.catalog.storage_io(_take, listing, batch_size):
            old = [info.key for info in batch if info.modified_at < cutoff]
            if old:
                deleted += self._delete_unowned(old, dry_run=dry_run, report=report)
        if deleted and not dry_run:
            log.info("sweeper deleted %d stored objects that no media record owns", deleted)
        return deleted

    def abort_stale_uploads(self) -> int:
        """Partial multipart uploads of writers that died (S3); nothing on local disk."""
        aborted = self.catalog.storage_io(self.storage.abort_incomplete_uploads, STALE_UPLOAD_AGE)
        if aborted:
            log.info("aborted %d incomplete uploads older than %s", aborted, STALE_UPLOAD_AGE)
        return aborted

    def _delete_unowned(
        self, keys: list[str], *, dry_run: bool = False, report: list[str] | None = None
    ) -> int:
        with self.sessions() as session:
            owned = set(
                session.scalars(select(Media.storage_key).where(Media.storage_key.in_(keys)))
            )
            owned.update(
                session.scalars(
                    select(MediaVariant.storage_key).where(MediaVariant.storage_key.in_(keys))
                )
            )
            # Uploads under way own their streamed tail and, once assembled or posted straight
            # to the bucket, their object, however long the client pauses.
            for column in (UploadSession.storage_key, UploadSession.tail_key):
                owned.update(
                    session.scalars(
                        select(column).where(
                            column.in_(keys), UploadSession.status.in_(UPLOAD_EXPIRABLE)
                        )
                    )
                )
        deleted = 0
        for key in keys:
            if key in owned:
                continue
            if dry_run:
                gone = True
            elif gone := self.catalog.storage_io(self.storage.delete, key):
                log.warning("deleted orphaned object %s (no media record owns it)", key)
            if gone:
                deleted += 1
                if report is not None:
                    report.append(key)
        return deleted

    def mark_missing_bytes(
        self, batch_size: int = 500, *, dry_run: bool = False, report: list[str] | None = None
    ) -> int:
        """Mark READY records whose stored object is gone as FAILED, loudly; never delete them.

        ``dry_run`` changes nothing and counts what would be marked; ``report`` receives those
        media ids.
        """
        cutoff = utcnow() - self.settings.orphan_grace
        marked = 0
        after = ""
        while True:
            with self.sessions() as session:
                rows = session.execute(
                    select(Media.id, Media.storage_key)
                    .where(
                        Media.status == MediaStatus.READY,
                        Media.storage_key.is_not(None),
                        Media.storage_key > after,
                        Media.created_at < cutoff,
                    )
                    .order_by(Media.storage_key)
                    .limit(batch_size)
                ).all()
            missing = [
                (media_id, key)
                for media_id, key in rows
                if not self.catalog.storage_io(self.storage.exists, key)
            ]
            if len(rows) >= SUSPICIOUS_BATCH and len(missing) == len(rows):
                # Every object gone at once is an unmounted volume or a wrong bucket far more
                # often than real loss: marking thousands of records FAILED would be the bug.
                log.error(
                    "not marking media FAILED: all %d objects checked are missing from %s "
                    "storage; check that the right volume or bucket is configured",
                    len(rows),
                    self.storage.name,
                )
                return marked
            for media_id, key in missing:
                if dry_run or self._mark_failed(media_id, key):
                    marked += 1
                    if report is not None:
                        report.append(media_id)
            if len(rows) < batch_size:
                return marked
            after = rows[-1].storage_key

    def _mark_failed(self, media_id: str, key: str) -> int:
        try:
            with self.catalog.changing() as session:
                media = session.scalar(
                    select(Media)
                    .where(Media.id == media_id, Media.status == MediaStatus.READY)
                    .with_for_update()
                )
                if media is None:  # changed meanwhile (deleted, or another instance marked it)
                    return 0
                media.status = MediaStatus.FAILED
                media.updated_at = next_updated_at(media.updated_at)
                self.catalog.record_media_event(session, MediaEvent.UPDATED, media, ["status"])
        except Conflict:  # changed between our read and our write: the next run looks again
            return 0
        log.error("media %s is FAILED: its stored object %s is missing", media_id, key)
        return 1

    def prune_delivery_keys(self, older_than: timedelta = DELIVERY_KEY_TTL) -> int:
        """Redeliveries come within minutes; a day of delivery keys is plenty."""
        with self.sessions.begin() as session:
            result = session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.kind == "delivery",
                    IdempotencyKey.created_at < utcnow() - older_than,
                )
            )
            return cast(CursorResult[Any], result).rowcount or 0

    def purge_expired(self, limit: int = 100) -> int:
        """Bytes first, then the row and ``media_purged``.

        No transaction is held while bytes are deleted (on SQLite that would keep every other
        writer waiting). Several instances may purge at once: deleting an object twice is a
        no-op, and only the one whose conditional row delete succeeds sends the event. A crash
        between the two steps leaves a deleted row without bytes, which the next run purges.
        """
        cutoff = utcnow() - self.settings.retention
        with self.sessions() as session:
            due = self.due_for_purge(session, limit, cutoff)
            variant_keys = _grouped(
                session.execute(
                    select(MediaVariant.media_id, MediaVariant.storage_key).where(
                        MediaVariant.media_id.in_([row.id for row in due])
                    )
                ).all()
            )
        purged = 0
        for media_id, key, *_ in due:
            for variant_key in variant_keys.get(media_id, []):
                self.catalog.storage_io(self.storage.delete, variant_key)
            if key:
                self.catalog.storage_io(self.storage.delete, key)
            purged += self._delete_purged_row(media_id, cutoff)
        if purged:
            log.info("purged %d media past their retention period", purged)
        return len(due)

    def due_for_purge(
        self, session: Session, limit: int, cutoff: datetime | None = None
    ) -> list[Any]:
        """What :meth:`purge_expired` removes next: media soft-deleted before ``cutoff`` (by
        default now minus the retention period), the longest deleted first. Rows of
        ``(id, storage_key, deleted_at, size)``."""
        if cutoff is None:
            cutoff = utcnow() - self.settings.retention
        return list(
            session.execute(
                select(Media.id, Media.storage_key, Media.deleted_at, Media.size)
                .where(Media.deleted_at.is_not(None), Media.deleted_at < cutoff)
                .order_by(Media.deleted_at)
                .limit(limit)
            ).all()
        )

    def _delete_purged_row(self, media_id: str, cutoff: datetime) -> int:
        try:
            with self.catalog.changing() as session:
                media = session.scalar(
                    select(Media)
                    .where(Media.id == media_id, Media.deleted_at < cutoff)
                    .with_for_update(skip_locked=True)
                )
                if media is None:  # purged by another instance, or restored meanwhile
                    return 0
                self.catalog.record_media_event(session, MediaEvent.PURGED, media)
                session.delete(media)
        except Conflict:  # another instance got there between our read and our delete
            return 0
        return 1


def _grouped(pairs: Iterable[Any]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for owner, value in pairs:
        grouped.setdefault(owner, []).append(value)
    return grouped


def _take(iterator: Iterator[T], count: int) -> list[T]:
    return list(islice(iterator, count))
