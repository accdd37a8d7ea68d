"""The ``media`` service: thin RPC entrypoints that validate, call the catalog and dump."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.wrappers import Request, Response

from schemas import load
from schemas.media import (
    CreateMediaSchema,
    CropSchema,
    InitiateUploadSchema,
    MediaQuerySchema,
    RegenerateSchema,
    ResizeSchema,
    UpdateMediaSchema,
    UploadFileSchema,
    UrlOptionsSchema,
)
from services.media.catalog.records import MediaCatalog, Page
from services.media.core import metrics
from services.media.core.ids import isoformat_z
from services.media.core.outbox import RELAY_MIN_AGE, prune_published, publish_pending
from services.media.delivery import files
from services.media.delivery.urls import LinkRejected
from services.media.dependencies import (
    BrokerHealth,
    CallerIdentity,
    Catalog,
    DeliveryId,
    MediaEventDispatcher,
    body_reader,
    chunk_reader,
    configured_timer,
    http,
    rpc,
)
from services.media.exceptions import (
    CONTRACT_ERRORS,
    Forbidden,
    MediaError,
    NotFound,
    StorageUnavailable,
    ValidationError,
)
from services.media.observability import Observability
from services.media.operations.exposition import exposition
from services.media.processing.imaging import DECODERS
from services.media.processing.jobs import MediaProcessor, Renditions
from services.media.uploads.sessions import Uploads
from services.media.uploads.tus import TusProtocol
from storage.errors import ObjectNotFound
from storage.errors import StorageUnavailable as BackendUnavailable

log = logging.getLogger(__name__)

# Schemas are built once: building one costs more than loading a typical payload with it.
UPLOAD_FILE = UploadFileSchema()
CREATE = CreateMediaSchema()
UPDATE = UpdateMediaSchema()
QUERY = MediaQuerySchema()
URL_OPTIONS = UrlOptionsSchema()
INITIATE_UPLOAD = InitiateUploadSchema()
RESIZE = ResizeSchema()
CROP = CropSchema()
REGENERATE = RegenerateSchema()

# Publishing right after commit must not hold the reply for long when the broker is away:
# the outbox relay retries later anyway.
QUICK_PUBLISH = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


class MediaService:
    name = "media"

    catalog: MediaCatalog = Catalog()
    caller = CallerIdentity()
    broker = BrokerHealth()
    delivery_id = DeliveryId()
    dispatch = MediaEventDispatcher(retry_policy=QUICK_PUBLISH)
    # One log line and the metrics of every RPC call, HTTP request and timer run.
    observe = Observability()

    # -- creating ---------------------------------------------------------------------------

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def upload_file(self, data: Any) -> dict[str, Any]:
        with self._boundary():
            data = load(UPLOAD_FILE, data)
            media = self.catalog.upload_file(self.caller, data, self.delivery_id)
            return self.catalog.present(media)

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def create(self, data: Any) -> dict[str, Any]:
        with self._boundary():
            media = self.catalog.create(self.caller, load(CREATE, data), self.delivery_id)
            return self.catalog.present(media)

    # -- reading ----------------------------------------------------------------------------

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def findOne(self, id: Any) -> dict[str, Any]:
        with self._boundary():
            return self.catalog.present(self.catalog.find_one(self.caller, _text("id", id)))

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def findAll(self, query: Any = None) -> dict[str, Any]:
        with self._boundary():
            return self._page(self.catalog.find(self.caller, _query(query)))

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def findByUser(self, userId: Any, query: Any = None) -> dict[str, Any]:
        with self._boundary():
            filters = _query(query, user_id=_text("userId", userId))
            return self._page(self.catalog.find(self.caller, filters))

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def findByEntity(self, entityType: Any, entityId: Any, query: Any = None) -> dict[str, Any]:
        with self._boundary():
            filters = _query(
                query,
                entity_type=_text("entityType", entityType),
                entity_id=_text("entityId", entityId),
            )
            return self._page(self.catalog.find(self.caller, filters))

    # -- changing ---------------------------------------------------------------------------

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def update(self, id: Any, data: Any) -> dict[str, Any]:
        with self._boundary():
            changes = load(UPDATE, data)
            media = self.catalog.update(self.caller, _text("id", id), changes, self.delivery_id)
            return self.catalog.present(media)

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def remove(self, id: Any) -> dict[str, Any]:
        with self._boundary():
            return self.catalog.present(self.catalog.remove(self.caller, _text("id", id)))

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def restore(self, id: Any) -> dict[str, Any]:
        with self._boundary():
            return self.catalog.present(self.catalog.restore(self.caller, _text("id", id)))

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def getUrl(self, id: Any, options: Any = None) -> dict[str, Any]:
        with self._boundary():
            link = self.catalog.get_url(
                self.caller, _text("id", id), load(URL_OPTIONS, options, argument="options")
            )
            return {"url": link.url, "expiresAt": isoformat_z(link.expires_at)}

    # -- variants ---------------------------------------------------------------------------

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def getVariants(self, id: Any) -> dict[str, Any]:
        with self._boundary():
            return {"items": self.renditions.list(self.caller, _text("id", id))}

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def resize(self, id: Any, options: Any = None) -> dict[str, Any]:
        with self._boundary():
            options = load(RESIZE, options, argument="options")
            return self.renditions.resize(self.caller, _text("id", id), options)

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def crop(self, id: Any, options: Any = None) -> dict[str, Any]:
        with self._boundary():
            options = load(CROP, options, argument="options")
            return self.renditions.crop(self.caller, _text("id", id), options)

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def optimize(self, id: Any) -> dict[str, Any]:
        with self._boundary():
            return self.renditions.optimize(self.caller, _text("id", id))

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def regenerateVariants(self, options: Any = None) -> dict[str, int]:
        """Remake preset variants whose recipe changed in config (admin and internal calls)."""
        with self._boundary():
            if not self.caller.is_trusted:
                raise Forbidden("regenerateVariants is for admin and internal calls only")
            limit = load(REGENERATE, options, argument="options")["limit"]
            return self.renditions.regenerate_stale(limit)

    @property
    def processor(self) -> MediaProcessor:
        return MediaProcessor(self.catalog)

    @property
    def renditions(self) -> Renditions:
        return Renditions(self.processor)

    # -- upload sessions --------------------------------------------------------------------

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def initiateUpload(self, data: Any) -> dict[str, Any]:
        with self._boundary():
            upload = self.uploads.initiate(
                self.caller, load(INITIATE_UPLOAD, data), self.delivery_id
            )
            return self.uploads.progress(self.caller, upload.id) | self.uploads.access(
                self.caller, upload
            )

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def renewUploadAccess(self, uploadId: Any) -> dict[str, Any]:
        """A fresh upload token (or fresh presigned URLs) for an upload still under way."""
        with self._boundary():
            return self.uploads.renew_access(self.caller, _text("uploadId", uploadId))

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def uploadPart(self, uploadId: Any, offset: Any, content: Any) -> dict[str, Any]:
        with self._boundary():
            return self.uploads.put_part(self.caller, _text("uploadId", uploadId), offset, content)

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def getUploadProgress(self, uploadId: Any) -> dict[str, Any]:
        with self._boundary():
            return self.uploads.progress(self.caller, _text("uploadId", uploadId))

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def completeUpload(self, uploadId: Any) -> dict[str, Any]:
        with self._boundary():
            media = self.uploads.complete(self.caller, _text("uploadId", uploadId))
            return self.catalog.present(media)

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def cancelUpload(self, uploadId: Any) -> dict[str, Any]:
        with self._boundary():
            return self.uploads.cancel(self.caller, _text("uploadId", uploadId))

    @property
    def uploads(self) -> Uploads:
        return Uploads(self.catalog)

    @rpc(expected_exceptions=CONTRACT_ERRORS)
    def removeByEntity(self, entityType: Any, entityId: Any) -> dict[str, int]:
        with self._boundary():
            removed = self.catalog.remove_by_entity(
                self.caller, _text("entityType", entityType), _text("entityId", entityId)
            )
            return {"removed": removed}

    # -- HTTP -------------------------------------------------------------------------------

    @http("GET", "/files/<string:media_id>")
    def download_file(self, request: Request, media_id: str) -> Response:
        """Stream a file: public media as is, private media with a valid signed link."""
        try:
            download = request.args.get("download") in ("1", "true")
            signed_until = None
            # The signature is checked before the database: a bad one is 403 whether the id
            # exists or not, so no answer tells a stranger which private ids exist.
            if "signature" in request.args:
                try:
                    self.catalog.urls.verify(
                        media_id,
                        expires=request.args.get("expires"),
                        key_id=request.args.get("kid"),
                        signature=request.args.get("signature"),
                        download=download,
                        variant=request.args.get("variant", ""),
                    )
                except LinkRejected as exc:
                    return files.error(403, str(exc))
                signed_until = int(request.args["expires"])
            media = self.catalog.servable(media_id)
            # Unsigned requests for private media get the answer an unknown id gets.
            if media is None or (signed_until is None and not media.is_public):
                return files.error(404, "no such file")
            if media.is_public:
                signed_until = None
            served = files.Served.original(media)
            variant_name = request.args.get("variant")
            if variant_name is not None:
                variant = next((v for v in media.variants if v.name == variant_name), None)
                if variant is None:
                    return files.error(404, "no such file")
                served = files.Served.variant(media, variant)
            return files.file_response(
                request,
                served,
                self.catalog.storage,
                download=download,
                signed_until=signed_until,
                read=chunk_reader(self.catalog.storage),
            )
        except ObjectNotFound:
            log.error("media %s is READY but its stored object is missing", media_id)
            return files.error(404, "no such file")
        except Exception:
            log.exception("file endpoint failed for %s", media_id)
            return files.error(503, "the file cannot be served right now")

    @http("OPTIONS,POST", "/uploads")
    def tus_create(self, request: Request) -> Response:
        """tus creation: the bearer token's session gets its URL (and, with a body, bytes)."""
        return self._tus(request, None)

    @http("OPTIONS,HEAD,PATCH,DELETE,POST", "/uploads/<string:upload_id>")
    def tus_upload(self, request: Request, upload_id: str) -> Response:
        """tus: offset (HEAD), bytes (PATCH), termination (DELETE)."""
        return self._tus(request, upload_id)

    def _tus(self, request: Request, upload_id: str | None) -> Response:
        settings = self.catalog.settings
        tus = TusProtocol(
            self.uploads,
            self.catalog.urls,
            body_reader(settings.upload_read_timeout.total_seconds()),
            settings.upload_cors_origin,
        )
        try:
            with self._boundary():
                return tus.handle(request, upload_id)
        except MediaError as exc:
            return tus.error_for(request, exc)
        except Exception:
            log.exception("tus request failed for upload %s", upload_id)
            return tus.error(500, "the upload could not be handled; retry later")

    @http("GET", "/health")
    def health(self, request: Request) -> Response:
        """200 when database, broker and storage are all reachable, 503 otherwise."""
        checks = {
            "database": self.catalog.check_database,
            "broker": self.broker.check,
            "storage": self.catalog.storage.check,
        }
        report: dict[str, Any] = {}
        for name, check in checks.items():
            try:
                check()
                report[name] = {"ok": True}
            except Exception as exc:
                report[name] = {"ok": False, "error": str(exc) or type(exc).__name__}
        healthy = all(part["ok"] for part in report.values())
        report["status"] = "ok" if healthy else "unavailable"
        # Informational: an image format without its decoder here is stored but not processed.
        report["decoders"] = {name.lower(): present for name, present in DECODERS.items()}
        response = Response(
            json.dumps(report), status=200 if healthy else 503, mimetype="application/json"
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @http("GET", "/metrics")
    def scrape_metrics(self, request: Request) -> Response:
        """Prometheus metrics; the database gauges are read now (a failure leaves them out)."""
        response = Response(exposition(self.catalog.sessions))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- background jobs --------------------------------------------------------------------

    @configured_timer("processing_interval_seconds", 1.0)
    def process_media(self) -> None:
        """Facts and variants of new media, off the request path; jobs of dead workers too."""
        with self._boundary():
            while self.processor.run_pending() == 10:
                pass

    @configured_timer("upload_expiry_interval_seconds", 300.0)
    def expire_uploads(self) -> None:
        """Discard the parts of upload sessions left idle."""
        with self._boundary():
            while self.uploads.expire_idle() == 100:
                pass

    @configured_timer("sweep_interval_seconds", 3600.0)
    def sweep_storage(self) -> None:
        """Delete bytes no record owns; flag records whose bytes are gone."""
        with self._boundary():
            metrics.sweeper_deleted_objects.inc(self.catalog.sweep_orphans())
            metrics.sweeper_marked_missing.inc(self.catalog.mark_missing_bytes())
            self.catalog.abort_stale_uploads()

    @configured_timer("outbox_interval_seconds", 1.0)
    def relay_outbox(self) -> None:
        """Publish events whose worker could not (broker away, or the process died)."""
        with self._boundary():
            while (
                publish_pending(self.catalog.sessions, self.dispatch, min_age=RELAY_MIN_AGE) == 100
            ):
                pass

    @configured_timer("purge_interval_seconds", 300.0)
    def purge_expired(self) -> None:
        with self._boundary():
            while True:
                taken = self.catalog.purge_expired()
                metrics.purged_media.inc(taken)
                if taken < 100:
                    break
            prune_published(self.catalog.sessions)
            self.catalog.prune_delivery_keys()

    # -- boundary ---------------------------------------------------------------------------

    def _page(self, page: Page) -> dict[str, Any]:
        result: dict[str, Any] = {
            "items": [self.catalog.present(media) for media in page.items],
            "nextCursor": page.next_cursor,
        }
        if page.total is not None:
            result["total"] = page.total
        return result

    @contextmanager
    def _boundary(self) -> Iterator[None]:
        """Translate infrastructure errors to contract errors, then publish committed events."""
        try:
            yield
        except ObjectNotFound as exc:
            raise NotFound(str(exc)) from None
        except BackendUnavailable as exc:
            log.warning("storage unavailable: %s", exc)
            raise StorageUnavailable(str(exc)) from None
        except DBAPIError as exc:
            if not exc.connection_invalidated and not _is_operational(exc):
                raise
            log.warning("database unavailable: %s", exc)
            raise StorageUnavailable("the media database is unavailable; retry later") from None
        finally:
            self._publish_recorded()

    def _publish_recorded(self) -> None:
        event_ids = self.catalog.work.take_committed()
        if not event_ids:
            return
        try:
            publish_pending(self.catalog.sessions, self.dispatch, event_ids=event_ids)
        except Exception:
            # Committed events stay in the outbox; the relay publishes them.
            log.warning("deferred %d events to the outbox relay", len(event_ids), exc_info=True)


def _is_operational(exc: DBAPIError) -> bool:
    return isinstance(exc, OperationalError | InterfaceError)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise ValidationError.for_field(name, "Must be a string of 1 to 255 characters.")
    return value


def _query(query: Any, **fixed: str) -> dict[str, Any]:
    """Load a find* query; the method's own arguments win over (and must agree with) the query."""
    filters = load(QUERY, query, argument="query")
    for name, value in fixed.items():
        if name in filters and filters[name] != value:
            wire = {"user_id": "userId", "entity_type": "entityType", "entity_id": "entityId"}[name]
            raise ValidationError.for_field(
                f"query.{wire}", "Contradicts the method's own argument."
            )
        filters[name] = value
    return filters
