"""The media domain: records, their bytes, who may touch them, and the events they cause.

No nameko here: the service passes in a session factory, a storage backend, settings and a way to
run CPU-heavy work off the event loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import unquote

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from schemas.fields import sanitize_display_name
from schemas.media import dump_media
from services.media.catalog.pagination import SortOrder
from services.media.core.identity import Caller
from services.media.core.ids import utcnow, uuid7
from services.media.core.models import (
    IdempotencyKey,
    Media,
    MediaTag,
    StoredVariant,
    UploadSession,
)
from services.media.core.settings import MediaSettings
from services.media.core.unit_of_work import UnitOfWork
from services.media.core.vocabulary import (
    SERVABLE,
    UPLOAD_EXPIRABLE,
    MediaEvent,
    MediaStatus,
    MediaType,
)
from services.media.delivery.urls import Link, MediaUrls
from services.media.exceptions import (
    Conflict,
    Forbidden,
    NotFound,
    QuotaExceeded,
    ValidationError,
)
from services.media.ingest.policy import (
    CheckedFile,
    check_declared_size,
    check_policy,
    decode_and_check,
    sniff_payload,
)
from services.media.ingest.sniffing import SNIFF_BYTES, media_type_of, sniff
from storage import Storage, new_key, validate_key
from storage.errors import InvalidKey, ObjectNotFound

log = logging.getLogger(__name__)

T = TypeVar("T")
Offload = Callable[..., Any]
# Starts a call and returns at once with something whose wait() gives the call's return value.
Spawn = Callable[..., Any]

# Fields a caller may change with update(), by internal name -> wire name.
UPDATABLE = {
    "original_name": "originalName",
    "metadata": "metadata",
    "is_public": "isPublic",
    "entity_type": "entityType",
    "entity_id": "entityId",
    "folder": "folder",
    "tags": "tags",
    "alt_text": "altText",
    "caption": "caption",
}


@dataclass(frozen=True)
class RequestKey:
    """What identifies a creating request for replay: the caller's key, else the delivery."""

    kind: str
    scope: str
    key: str
    request_hash: str

    @classmethod
    def of(
        cls, data: dict[str, Any], delivery_id: str | None, request_hash: str
    ) -> RequestKey | None:
        scope = data["user_id"] or ""
        if data.get("idempotency_key"):
            return cls("caller", scope, data["idempotency_key"], request_hash)
        if delivery_id:
            return cls("delivery", scope, delivery_id, request_hash)
        return None

    @property
    def label(self) -> str:
        if self.kind == "caller":
            return f"idempotencyKey {self.key!r}"
        return f"request message {self.key!r}"

    def row(self, media: Media) -> IdempotencyKey:
        return IdempotencyKey(
            kind=self.kind,
            scope=self.scope,
            key=self.key,
            request_hash=self.request_hash,
            media_id=media.id,
            created_at=media.created_at,
        )


@dataclass
class Page:
    items: list[Media]
    next_cursor: str | None
    total: int | None = None


def _run_inline(function: Callable[..., T], *args: Any) -> T:
    return function(*args)


class _Done:
    """A call already made: for callers not on an event loop (scripts, unit tests)."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.value = function(*args)

    def wait(self) -> Any:
        return self.value


class Pending:
    """A call running alongside the caller; :meth:`wait` returns its result or raises its error."""

    def __init__(self, spawn: Spawn, function: Callable[..., Any], *args: Any) -> None:
        # The error is carried back as a value: a green thread dying of it would be reported on
        # its own (and again by whoever waits).
        self._running = spawn(_outcome, function, *args)

    def wait(self) -> Any:
        ok, value = self._running.wait()
        if not ok:
            raise value
        return value


def _outcome(function: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    try:
        return True, function(*args)
    except Exception as exc:
        return False, exc


@dataclass
class MediaCatalog:
    sessions: sessionmaker
    storage: Storage
    settings: MediaSettings
    offload: Offload = _run_inline
    spawn: Spawn = _Done

    def __post_init__(self) -> None:
        self.urls = MediaUrls(self.settings, self.storage)
        # The worker's transactions and the events their commits made due.
        self.work = UnitOfWork(self.sessions)

    def storage_io(self, function: Callable[..., T], *args: Any) -> T:
        """Blocking backends (files) go through the thread pool; network ones on green sockets
        run here, where waiting costs the event loop nothing."""
        if self.storage.blocking_io:
            return self.offload(function, *args)
        return function(*args)

    def start(self, function: Callable[..., Any], *args: Any) -> Pending:
        """Run ``function(*args)`` alongside the caller (a green thread under the service)."""
        return Pending(self.spawn, function, *args)

    # -- presentation -----------------------------------------------------------------------

    def present(self, media: Media) -> dict[str, Any]:
        now = utcnow()
        record = dump_media(media, self.urls.for_media(media, now))
        record["variants"] = [
            self.present_variant(media, variant, now) for variant in media.variants
        ]
        return record

    def present_page(self, page: Page) -> dict[str, Any]:
        result: dict[str, Any] = {
            "items": [self.present(media) for media in page.items],
            "nextCursor": page.next_cursor,
        }
        if page.total is not None:
            result["total"] = page.total
        return result

    def present_variant(
        self, media: Media, variant: StoredVariant, now: datetime | None = None
    ) -> dict[str, Any]:
        return {
            "name": variant.name,
            "width": variant.width,
            "height": variant.height,
            "format": variant.format,
            "mimeType": variant.mime_type,
            "size": variant.size,
            "url": self.urls.for_media(media, now, variant=variant.name),
        }

    def record_media_event(
        self,
        session: Session,
        event_type: MediaEvent,
        media: Media,
        changes: list[str] | None = None,
        **extra: Any,
    ) -> None:
        """Add the event to ``session``'s transaction: it is sent once, if that commits."""
        session.flush()
        self.work.record(session, event_type, media=self.present(media), changes=changes, **extra)

    # -- creating ---------------------------------------------------------------------------

    def upload_file(
        self, caller: Caller, data: dict[str, Any], delivery_id: str | None = None
    ) -> Media:
        """``delivery_id`` identifies the request message: a redelivery replays the first answer."""
        self.check_acting_for(caller, data["user_id"])
        encoded: str = data.pop("content")
        check_declared_size(encoded, self.settings)
        sniffed = sniff_payload(encoded, data.get("mime_type"), self.settings)
        checked: CheckedFile = self.offload(
            decode_and_check, encoded, sniffed, self.settings.image_limits
        )
        del encoded

        request = RequestKey.of(data, delivery_id, request_hash(data, checked.checksum))
        existing = self._replay(request)
        if existing is not None:
            return existing

        self.check_quota(data["user_id"], checked.size)
        key = new_key()
        stored = self.storage_io(self.storage.put, key, [checked.data], sniffed.mime_type)
        media = self.new_media(
            data,
            storage_key=key,
            type=sniffed.media_type.value,
            mime_type=sniffed.mime_type,
            size=stored.size,
            checksum=stored.checksum,
            width=checked.width,
            height=checked.height,
        )
        return self.commit_new(media, request, written_key=key)

    def create(self, caller: Caller, data: dict[str, Any], delivery_id: str | None = None) -> Media:
        self.check_acting_for(caller, data["user_id"])
        # The key or URL names the bytes, so the request is known before storage is read.
        request = RequestKey.of(data, delivery_id, request_hash(data, None))
        existing = self._replay(request)
        if existing is not None:
            return existing
        if "storage_key" in data:
            fields = self._describe_stored_object(data["storage_key"], data.get("mime_type"))
        else:
            fields = self._describe_external_url(data)
        media = self.new_media(data, **fields)
        return self.commit_new(media, request, written_key=None)

    def _describe_stored_object(self, key: str, declared_mime: str | None) -> dict[str, Any]:
        try:
            validate_key(key)
            info = self.storage.head(key)
            head = self.storage.read_head(key, SNIFF_BYTES)
        except (InvalidKey, ObjectNotFound):
            raise NotFound(f"no stored object with key {key!r}") from None
        if info.size == 0:
            raise ValidationError.for_field("storageKey", "The stored object is empty.")
        sniffed = sniff(head)
        check_policy(sniffed, info.size, declared_mime, self.settings)
        checksum = self.storage_io(checksum_of, self.storage, key)
        with self.sessions() as session:
            if session.scalar(select(Media.id).where(Media.storage_key == key)):
                raise Conflict(f"the object {key!r} already belongs to a media record")
        return {
            "storage_key": key,
            "type": sniffed.media_type.value,
            "mime_type": sniffed.mime_type,
            "size": info.size,
            "checksum": checksum,
        }

    @staticmethod
    def _describe_external_url(data: dict[str, Any]) -> dict[str, Any]:
        # External URLs are never fetched (that would let callers make us request anything):
        # the type is the caller's hint and the size is unknown (0).
        mime = (data.get("mime_type") or "application/octet-stream").split(";")[0].strip().lower()
        return {
            "external_url": data["url"],
            "type": media_type_of(mime).value,
            "mime_type": mime,
            "size": 0,
            "checksum": None,
        }

    def new_media(self, data: dict[str, Any], **fields: Any) -> Media:
        now = utcnow()
        name = data.get("original_name") or _name_from_source(fields)
        processing = needs_processing(
            fields.get("type", ""), fields.get("mime_type", ""), fields.get("storage_key")
        )
        media = Media(
            id=uuid7(),
            status=MediaStatus.PROCESSING if processing else MediaStatus.READY,
            original_name=name,
            user_id=data["user_id"],
            entity_type=data.get("entity_type"),
            entity_id=data.get("entity_id"),
            is_public=data.get("is_public", False),
            meta=data.get("metadata") or {},
            folder=data.get("folder"),
            alt_text=data.get("alt_text"),
            caption=data.get("caption"),
            created_at=now,
            updated_at=now,
            processing_attempts=0,
            variant_list=[],
            **fields,
        )
        _set_tags(media, data.get("tags") or [])
        return media

    def commit_new(
        self,
        media: Media,
        request: RequestKey | None,
        written_key: str | None,
        also: Callable[[Session], None] | None = None,
    ) -> Media:
        """Insert row, idempotency key and event in one transaction; on failure drop our bytes.

        ``also`` adds more to the same transaction (an upload session marking itself done).
        """
        try:
            with self.work.transaction() as session:
                session.add(media)
                if request is not None:
                    session.add(request.row(media))
                self.record_media_event(session, MediaEvent.CREATED, media)
                if also is not None:
                    also(session)
        except IntegrityError:
            self.discard_object(written_key)
            if request is not None:
                # A concurrent delivery of the same request won the race: answer as it did.
                existing = self._replay(request)
                if existing is not None:
                    return existing
            if written_key is None and media.storage_key:
                raise Conflict(
                    f"the object {media.storage_key!r} already belongs to a media record"
                ) from None
            raise
        except BaseException:
            self.discard_object(written_key)
            raise
        return media

    @contextmanager
    def changing(self) -> Iterator[Session]:
        """A transaction changing existing media. Events it recorded vanish with a rollback, and
        a row someone else changed since it was read (optimistic check on ``updated_at``) is a
        Conflict rather than a lost update."""
        try:
            with self.work.transaction() as session:
                yield session
        except StaleDataError:
            raise Conflict("the media changed meanwhile; read it again and retry") from None

    def discard_object(self, key: str | None) -> None:
        if key is None:
            return
        try:
            self.storage_io(self.storage.delete, key)
        except Exception:
            # The orphan sweeper removes it later; the caller must still see the first error.
            log.exception("could not delete orphaned object %s after a failed insert", key)

    def _replay(self, request: RequestKey | None) -> Media | None:
        if request is None:
            return None
        with self.sessions() as session:
            row = session.get(IdempotencyKey, (request.kind, request.scope, request.key))
            if row is None:
                return None
            if row.request_hash != request.request_hash:
                raise Conflict(f"{request.label} was already used with a different request")
            media = session.get(Media, row.media_id)
            if media is None:
                raise NotFound(f"the media first created with {request.label} is purged")
            return media

    def check_quota(self, user_id: str | None, adding: int) -> None:
        """Refuse ``adding`` bytes that would take the user past the configured quota.

        Usage is the size of the user's media not deleted plus the declared size of their
        uploads under way, so two uploads started together cannot both use the last bytes.
        """
        quota = self.settings.user_quota_bytes
        if quota is None or user_id is None:
            return
        used = self.usage_bytes(user_id)
        if used + adding > quota:
            raise QuotaExceeded(
                f"this would take the user's storage to {used + adding} bytes, over the quota "
                f"of {quota} bytes ({used} in use)"
            )

    def usage_bytes(self, user_id: str) -> int:
        with self.sessions() as session:
            media = session.scalar(
                select(func.coalesce(func.sum(Media.size), 0)).where(
                    Media.user_id == user_id, Media.status != MediaStatus.DELETED
                )
            )
            uploads = session.scalar(
                select(func.coalesce(func.sum(UploadSession.size), 0)).where(
                    UploadSession.user_id == user_id, UploadSession.status.in_(UPLOAD_EXPIRABLE)
                )
            )
        return int(media or 0) + int(uploads or 0)

    @staticmethod
    def check_acting_for(caller: Caller, user_id: str) -> None:
        if not caller.owns(user_id):
            raise Forbidden("userId must be the calling user's own id")

    # -- reading ----------------------------------------------------------------------------

    def find_one(self, caller: Caller, media_id: str) -> Media:
        with self.sessions() as session:
            return self._get_visible(session, caller, media_id)

    def get_url(self, caller: Caller, media_id: str, options: dict[str, Any]) -> Link:
        with self.sessions() as session:
            media = self._get_visible(session, caller, media_id)
        variant = options.get("variant") or ""
        if variant and variant not in {row.name for row in media.variants}:
            raise NotFound(f"media {media_id!r} has no variant {variant!r}")
        return self.urls.link(
            media,
            timedelta(seconds=options["expires_in"]),
            download=options["download"],
            variant=variant,
        )

    def servable(self, media_id: str) -> Media | None:
        """The media whose bytes the file endpoint may stream: live, stored by us, and READY or
        still PROCESSING (its original bytes are verified; only its variants are to come)."""
        with self.sessions() as session:
            media = session.get(Media, media_id)
        if media is None or media.deleted_at is not None or media.status not in SERVABLE:
            return None
        return media if media.storage_key else None

    def check_database(self) -> None:
        with self.sessions() as session:
            session.execute(select(1))

    def find(self, caller: Caller, query: dict[str, Any]) -> Page:
        if query.get("include_deleted") and not caller.is_trusted:
            raise Forbidden("includeDeleted is for admin and internal calls only")
        order = SortOrder.parse(query["sort"])
        conditions = self._filters(caller, query)
        limit = query["limit"]
        with self.sessions() as session:
            statement = order.apply(select(Media).where(*conditions), query.get("cursor"))
            rows = list(session.scalars(statement.limit(limit + 1)))
            next_cursor = order.cursor_after(rows[limit - 1]) if len(rows) > limit else None
            total = None
            if query.get("with_total"):
                total = session.scalar(select(func.count()).select_from(Media).where(*conditions))
        return Page(items=rows[:limit], next_cursor=next_cursor, total=total)

    def _filters(self, caller: Caller, query: dict[str, Any]) -> list[Any]:
        conditions: list[Any] = []
        if not caller.is_trusted:
            conditions.append(or_(Media.user_id == caller.user_id, Media.is_public.is_(True)))
        if not query.get("include_deleted"):
            conditions.append(Media.deleted_at.is_(None))
        for name, column in (
            ("type", Media.type),
            ("user_id", Media.user_id),
            ("entity_type", Media.entity_type),
            ("entity_id", Media.entity_id),
            ("status", Media.status),
            ("is_public", Media.is_public),
        ):
            if name in query:
                conditions.append(column == query[name])
        if "mime_type" in query:
            mime = query["mime_type"]
            if mime.endswith("/*"):
                family = mime[:-1]  # "image/": a range keeps the index usable on every database
                conditions.append(
                    and_(Media.mime_type >= family, Media.mime_type < family[:-1] + "0")
                )
            else:
                conditions.append(Media.mime_type == mime)
        if "folder" in query:
            folder = query["folder"]
            conditions.append(Media.folder.is_(None) if folder is None else Media.folder == folder)
        for tag in _unique(query.get("tags") or []):
            conditions.append(exists().where(MediaTag.media_id == Media.id, MediaTag.tag == tag))
        if "search" in query:
            pattern = "%" + _escape_like(query["search"]) + "%"
            conditions.append(
                or_(
                    Media.original_name.ilike(pattern, escape="\\"),
                    Media.alt_text.ilike(pattern, escape="\\"),
                    Media.caption.ilike(pattern, escape="\\"),
                )
            )
        if "created_after" in query:
            conditions.append(Media.created_at > query["created_after"])
        if "created_before" in query:
            conditions.append(Media.created_at < query["created_before"])
        return conditions

    def _get_visible(
        self,
        session: Session,
        caller: Caller,
        media_id: str,
        *,
        include_deleted: bool = False,
        for_update: bool = False,
    ) -> Media:
        statement = select(Media).where(Media.id == media_id)
        if for_update:
            statement = statement.with_for_update()
        media = session.scalar(statement)
        if (
            media is None
            or (media.deleted_at is not None and not include_deleted)
            or not (media.is_public or caller.owns(media.user_id))
        ):
            raise NotFound(f"media {media_id!r} not found")
        return media

    def _get_owned(
        self, session: Session, caller: Caller, media_id: str, *, include_deleted: bool = False
    ) -> Media:
        media = self._get_visible(
            session, caller, media_id, include_deleted=include_deleted, for_update=True
        )
        if not caller.owns(media.user_id):
            raise Forbidden(f"media {media_id!r} belongs to another user")
        return media

    # -- changing ---------------------------------------------------------------------------

    def update(
        self,
        caller: Caller,
        media_id: str,
        changes: dict[str, Any],
        delivery_id: str | None = None,
    ) -> Media:
        """``delivery_id`` identifies the request message: a redelivery of the message that made
        the last change answers with the record instead of a conflict with itself."""
        expected: datetime | None = changes.pop("expected_updated_at", None)
        with self.changing() as session:
            media = self._get_owned(session, caller, media_id)
            if expected is not None and media.updated_at != expected:
                if delivery_id is not None and media.updated_by_delivery == _delivery_mark(
                    delivery_id, media.updated_at
                ):
                    return media  # as this message left it: it is being delivered again
                raise Conflict(
                    f"media {media_id!r} changed since {expected.isoformat()}Z; "
                    "read it again and retry"
                )
            changed = _apply(media, changes)
            if changed:
                media.updated_at = next_updated_at(media.updated_at)
                if delivery_id is not None:
                    media.updated_by_delivery = _delivery_mark(delivery_id, media.updated_at)
                self.record_media_event(session, MediaEvent.UPDATED, media, changed)
        return media

    def remove(self, caller: Caller, media_id: str) -> Media:
        with self.changing() as session:
            media = self._get_owned(session, caller, media_id, include_deleted=True)
            if media.deleted_at is None:
                self._soft_delete(session, media)
        return media

    def restore(self, caller: Caller, media_id: str) -> Media:
        with self.changing() as session:
            media = self._get_owned(session, caller, media_id, include_deleted=True)
            if media.deleted_at is None:
                return media
            if media.deleted_at < utcnow() - self.settings.retention:
                raise NotFound(f"media {media_id!r} is past its retention period")
            media.deleted_at = None
            media.status = _status_after_restore(media)
            media.updated_at = next_updated_at(media.updated_at)
            self.record_media_event(session, MediaEvent.RESTORED, media)
        return media

    def remove_by_entity(self, caller: Caller, entity_type: str, entity_id: str) -> int:
        """Soft-delete what is linked to the entity; a user caller removes only its own media."""
        removed = 0
        while True:
            with self.changing() as session:
                statement = select(Media).where(
                    Media.entity_type == entity_type,
                    Media.entity_id == entity_id,
                    Media.deleted_at.is_(None),
                )
                if not caller.is_trusted:
                    statement = statement.where(Media.user_id == caller.user_id)
                batch = list(
                    session.scalars(statement.order_by(Media.id).limit(100).with_for_update())
                )
                for media in batch:
                    self._soft_delete(session, media)
            removed += len(batch)
            if len(batch) < 100:
                return removed

    def _soft_delete(self, session: Session, media: Media) -> None:
        now = utcnow()
        media.deleted_at = now
        media.status = MediaStatus.DELETED
        media.updated_at = next_updated_at(media.updated_at, now)
        self.record_media_event(session, MediaEvent.REMOVED, media)


class OverCatalog:
    """Work done over one worker's catalog (processing, uploads, hygiene): its settings, storage
    and sessions are the catalog's, read when used, so the object outlives no setting."""

    def __init__(self, catalog: MediaCatalog) -> None:
        self.catalog = catalog

    @property
    def settings(self) -> MediaSettings:
        return self.catalog.settings

    @property
    def storage(self) -> Storage:
        return self.catalog.storage

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.catalog.sessions


def _status_after_restore(media: Media) -> str:
    """What the media was before it was removed: FAILED if processing refused it, PROCESSING
    if processing never finished (the job resumes), else READY."""
    if media.processing_error:
        return MediaStatus.FAILED
    if media.facts is None and needs_processing(media.type, media.mime_type, media.storage_key):
        return MediaStatus.PROCESSING
    return MediaStatus.READY


def needs_processing(media_type: str, mime_type: str, storage_key: str | None) -> bool:
    """Whether a new media starts ``PROCESSING``: stored bytes that can tell more (images,
    video, audio and PDF). The rest is ``READY`` at once."""
    if storage_key is None:
        return False
    if media_type in (MediaType.IMAGE.value, MediaType.VIDEO.value, MediaType.AUDIO.value):
        return True
    return mime_type == "application/pdf"


def _apply(media: Media, changes: dict[str, Any]) -> list[str]:
    changed: list[str] = []
    for name, value in changes.items():
        if name == "tags":
            if _unique(value) != media.tags:
                _set_tags(media, value)
                changed.append(UPDATABLE[name])
            continue
        attribute = "meta" if name == "metadata" else name
        if getattr(media, attribute) != value:
            setattr(media, attribute, value)
            changed.append(UPDATABLE[name])
    return changed


def _set_tags(media: Media, tags: list[str]) -> None:
    """The readable column and the indexed rows always change together."""
    media.tags = _unique(tags)
    media.tag_rows = [MediaTag(tag=tag) for tag in media.tags]


def next_updated_at(previous: datetime, now: datetime | None = None) -> datetime:
    """A fresh updatedAt that is always later than the last one, so expectedUpdatedAt works."""
    now = now or utcnow()
    return now if now > previous else previous + timedelta(microseconds=1)


def _unique(tags: list[str]) -> list[str]:
    return sorted(set(tags))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _name_from_source(fields: dict[str, Any]) -> str:
    source = fields.get("storage_key") or fields.get("external_url") or ""
    last = source.split("?")[0].split("#")[0].rstrip("/").rsplit("/", 1)[-1]
    return sanitize_display_name(unquote(last)) or "file"


def request_hash(data: dict[str, Any], checksum: str | None) -> str:
    """What makes two requests 'the same' for an idempotency key: every field but the key."""
    canonical = {k: v for k, v in data.items() if k != "idempotency_key"}
    canonical["checksum"] = checksum
    canonical["tags"] = _unique(canonical.get("tags") or [])
    encoded = json.dumps(canonical, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def _delivery_mark(delivery_id: str, updated_at: datetime) -> str:
    return hashlib.sha256(f"{delivery_id}\n{updated_at.isoformat()}".encode()).hexdigest()


def checksum_of(storage: Storage, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in storage.iter_chunks(key):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


__all__ = ["MediaCatalog", "Page"]
