"""The ``media`` service: a routing table. Each entrypoint loads its arguments with ``schemas``,
calls one capability and dumps the result; errors and events are handled once, by
:meth:`MediaService.boundary`."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Request, Response

from schemas import load
from schemas.arguments import find_query, text
from schemas.media import (
    CREATE,
    CROP,
    INITIATE_UPLOAD,
    REGENERATE,
    RESIZE,
    UPDATE,
    UPLOAD_FILE,
    URL_OPTIONS,
)
from services.media.catalog.hygiene import Hygiene
from services.media.catalog.records import MediaCatalog
from services.media.core import metrics
from services.media.core.ids import isoformat_z
from services.media.core.outbox import RELAY_MIN_AGE, prune_published, publish_pending
from services.media.delivery import files
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
)
from services.media.entrypoints import (
    contract_errors,
    drain,
    method,
    publish_committed,
    uncached,
)
from services.media.exceptions import Forbidden
from services.media.observability import Observability
from services.media.operations.exposition import exposition
from services.media.operations.health import health_report
from services.media.processing.jobs import MediaProcessor
from services.media.processing.renditions import Renditions
from services.media.uploads.sessions import Uploads
from services.media.uploads.tus import TusProtocol

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

    # The capabilities over this worker's catalog, made once per worker.
    @functools.cached_property
    def processor(self) -> MediaProcessor:
        return MediaProcessor(self.catalog)

    @functools.cached_property
    def renditions(self) -> Renditions:
        return Renditions(self.processor)

    @functools.cached_property
    def uploads(self) -> Uploads:
        return Uploads(self.catalog)

    @functools.cached_property
    def hygiene(self) -> Hygiene:
        return Hygiene(self.catalog)

    # -- records ----------------------------------------------------------------------------

    @method
    def upload_file(self, data: Any) -> dict[str, Any]:
        media = self.catalog.upload_file(self.caller, load(UPLOAD_FILE, data), self.delivery_id)
        return self.catalog.present(media)

    @method
    def create(self, data: Any) -> dict[str, Any]:
        media = self.catalog.create(self.caller, load(CREATE, data), self.delivery_id)
        return self.catalog.present(media)

    @method
    def findOne(self, id: Any) -> dict[str, Any]:
        return self.catalog.present(self.catalog.find_one(self.caller, text("id", id)))

    @method
    def findAll(self, query: Any = None) -> dict[str, Any]:
        return self.catalog.present_page(self.catalog.find(self.caller, find_query(query)))

    @method
    def findByUser(self, userId: Any, query: Any = None) -> dict[str, Any]:
        filters = find_query(query, user_id=text("userId", userId))
        return self.catalog.present_page(self.catalog.find(self.caller, filters))

    @method
    def findByEntity(self, entityType: Any, entityId: Any, query: Any = None) -> dict[str, Any]:
        entity = {"entity_type": text("entityType", entityType)}
        filters = find_query(query, **entity, entity_id=text("entityId", entityId))
        return self.catalog.present_page(self.catalog.find(self.caller, filters))

    @method
    def update(self, id: Any, data: Any) -> dict[str, Any]:
        changes = load(UPDATE, data)
        media = self.catalog.update(self.caller, text("id", id), changes, self.delivery_id)
        return self.catalog.present(media)

    @method
    def remove(self, id: Any) -> dict[str, Any]:
        return self.catalog.present(self.catalog.remove(self.caller, text("id", id)))

    @method
    def restore(self, id: Any) -> dict[str, Any]:
        return self.catalog.present(self.catalog.restore(self.caller, text("id", id)))

    @method
    def removeByEntity(self, entityType: Any, entityId: Any) -> dict[str, int]:
        entity = (text("entityType", entityType), text("entityId", entityId))
        return {"removed": self.catalog.remove_by_entity(self.caller, *entity)}

    @method
    def getUrl(self, id: Any, options: Any = None) -> dict[str, Any]:
        options = load(URL_OPTIONS, options, argument="options")
        link = self.catalog.get_url(self.caller, text("id", id), options)
        return {"url": link.url, "expiresAt": isoformat_z(link.expires_at)}

    # -- variants ---------------------------------------------------------------------------

    @method
    def getVariants(self, id: Any) -> dict[str, Any]:
        return {"items": self.renditions.list(self.caller, text("id", id))}

    @method
    def resize(self, id: Any, options: Any = None) -> dict[str, Any]:
        options = load(RESIZE, options, argument="options")
        return self.renditions.resize(self.caller, text("id", id), options)

    @method
    def crop(self, id: Any, options: Any = None) -> dict[str, Any]:
        options = load(CROP, options, argument="options")
        return self.renditions.crop(self.caller, text("id", id), options)

    @method
    def optimize(self, id: Any) -> dict[str, Any]:
        return self.renditions.optimize(self.caller, text("id", id))

    @method
    def regenerateVariants(self, options: Any = None) -> dict[str, int]:
        """Remake preset variants whose recipe changed in config (admin and internal calls)."""
        if not self.caller.is_trusted:
            raise Forbidden("regenerateVariants is for admin and internal calls only")
        limit = load(REGENERATE, options, argument="options")["limit"]
        return self.renditions.regenerate_stale(limit)

    # -- upload sessions --------------------------------------------------------------------

    @method
    def initiateUpload(self, data: Any) -> dict[str, Any]:
        upload = self.uploads.initiate(self.caller, load(INITIATE_UPLOAD, data), self.delivery_id)
        progress = self.uploads.progress(self.caller, upload.id)
        return progress | self.uploads.access(self.caller, upload)

    @method
    def renewUploadAccess(self, uploadId: Any) -> dict[str, Any]:
        """A fresh upload token (or fresh presigned URLs) for an upload still under way."""
        return self.uploads.renew_access(self.caller, text("uploadId", uploadId))

    @method
    def uploadPart(self, uploadId: Any, offset: Any, content: Any) -> dict[str, Any]:
        return self.uploads.put_part(self.caller, text("uploadId", uploadId), offset, content)

    @method
    def getUploadProgress(self, uploadId: Any) -> dict[str, Any]:
        return self.uploads.progress(self.caller, text("uploadId", uploadId))

    @method
    def completeUpload(self, uploadId: Any) -> dict[str, Any]:
        return self.catalog.present(self.uploads.complete(self.caller, text("uploadId", uploadId)))

    @method
    def cancelUpload(self, uploadId: Any) -> dict[str, Any]:
        return self.uploads.cancel(self.caller, text("uploadId", uploadId))

    # -- HTTP -------------------------------------------------------------------------------

    @http("GET", "/files/<string:media_id>")
    def download_file(self, request: Request, media_id: str) -> Response:
        """Stream a file: public media as is, private media with a valid signed link."""
        storage = self.catalog.storage
        return files.download(
            request,
            media_id,
            urls=self.catalog.urls,
            find=self.catalog.servable,
            storage=storage,
            read=chunk_reader(storage),
        )

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
        read = body_reader(settings.upload_read_timeout.total_seconds())
        tus = TusProtocol(self.uploads, self.catalog.urls, read, settings.upload_cors_origin)
        return tus.serve(request, upload_id, self.boundary)

    @http("GET", "/health")
    def health(self, request: Request) -> Response:
        """200 when database, broker and storage are all reachable, 503 otherwise."""
        checks = {
            "database": self.catalog.check_database,
            "broker": self.broker.check,
            "storage": self.catalog.storage.check,
        }
        healthy, report = health_report(checks)
        return uncached(json.dumps(report), "application/json", 200 if healthy else 503)

    @http("GET", "/metrics")
    def scrape_metrics(self, request: Request) -> Response:
        """Prometheus metrics; the database gauges are read now (a failure leaves them out)."""
        return uncached(exposition(self.catalog.sessions), CONTENT_TYPE_LATEST)

    # -- background jobs --------------------------------------------------------------------

    @configured_timer("processing_interval_seconds", 1.0)
    def process_media(self) -> None:
        """Facts and variants of new media, off the request path; jobs of dead workers too."""
        with self.boundary():
            drain(self.processor.run_pending, 10)

    @configured_timer("upload_expiry_interval_seconds", 300.0)
    def expire_uploads(self) -> None:
        """Discard the parts of upload sessions left idle."""
        with self.boundary():
            drain(self.uploads.expire_idle, 100)

    @configured_timer("sweep_interval_seconds", 3600.0)
    def sweep_storage(self) -> None:
        """Delete bytes no record owns; flag records whose bytes are gone."""
        with self.boundary():
            metrics.sweeper_deleted_objects.inc(self.hygiene.sweep_orphans())
            metrics.sweeper_marked_missing.inc(self.hygiene.mark_missing_bytes())
            self.hygiene.abort_stale_uploads()

    @configured_timer("outbox_interval_seconds", 1.0)
    def relay_outbox(self) -> None:
        """Publish events whose worker could not (broker away, or the process died)."""
        relay = functools.partial(
            publish_pending, self.catalog.sessions, self.dispatch, min_age=RELAY_MIN_AGE
        )
        with self.boundary():
            drain(relay, 100)

    @configured_timer("purge_interval_seconds", 300.0)
    def purge_expired(self) -> None:
        with self.boundary():
            metrics.purged_media.inc(drain(self.hygiene.purge_expired, 100))
            prune_published(self.catalog.sessions)
            self.hygiene.prune_delivery_keys()

    # -- boundary ---------------------------------------------------------------------------

    @contextmanager
    def boundary(self) -> Iterator[None]:
        """Infrastructure errors as contract errors; then the committed events published."""
        try:
            with contract_errors():
                yield
        finally:
            self._publish_recorded()

    def _publish_recorded(self) -> None:
        publish_committed(self.catalog.work, self.catalog.sessions, self.dispatch)
