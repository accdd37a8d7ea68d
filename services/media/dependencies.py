"""Nameko dependency providers: the only place where nameko meets the domain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import eventlet
from eventlet import tpool
from kombu.connection import Connection
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.timer import Timer
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer
from nameko_sqlalchemy import Database

from services.media.catalog.records import MediaCatalog
from services.media.core import metrics
from services.media.core.database import engine_options, prepare_engine
from services.media.core.identity import IDENTITY_CONTEXT_KEYS, Caller
from services.media.core.models import Base
from services.media.core.settings import MediaSettings
from services.media.uploads.sessions import StreamInterrupted
from storage import Storage, build_storage

DELIVERY_CONTEXT_KEY = "media_delivery_id"
MAX_DELIVERY_ID = 255  # what the idempotency key columns hold
# On every HTTP response, errors included: no sniffing, and nothing served here may run script.
SAFE_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; sandbox"),
    ("Referrer-Policy", "no-referrer"),
)


def offload(function: Any, *args: Any) -> Any:
    """CPU and blocking file work runs in a native thread so the hub keeps heartbeats going."""
    return tpool.execute(function, *args)


class Catalog(Database):
    """Gives each worker a :class:`MediaCatalog` over nameko-sqlalchemy's session factory."""

    def __init__(self) -> None:
        super().__init__(Base, session_options={"expire_on_commit": False})

    def setup(self) -> None:
        config = self.container.config
        url = config["DB_URIS"][f"{self.container.service_name}:{Base.__name__}"]
        self.engine_options = engine_options(url)
        super().setup()
        prepare_engine(self.engine)
        self.settings = MediaSettings.from_config(config)
        self.storage = build_storage(config)

    def get_dependency(self, worker_ctx: Any) -> MediaCatalog:
        return MediaCatalog(
            sessions=self.Session,
            storage=self.storage,
            settings=self.settings,
            offload=offload,
            spawn=eventlet.spawn,
        )

    def worker_teardown(self, worker_ctx: Any) -> None:
        # Sessions are opened and closed by the catalog itself; nothing is kept per worker.
        pass


class CallerIdentity(DependencyProvider):
    """The caller's identity from the context data every nameko call carries."""

    def get_dependency(self, worker_ctx: Any) -> Caller:
        data = worker_ctx.context_data
        user_id, roles = IDENTITY_CONTEXT_KEYS
        return Caller.from_context(data.get(user_id), data.get(roles))


class MediaEventDispatcher(EventDispatcher):
    """Events describe committed facts, not a caller's request: they carry no caller identity.

    nameko would copy the caller's context data (``user_id``, ``roles``) into the event headers,
    so a subscriber calling back into ``media`` would act as whoever made the change when the
    worker published the event, and as nobody when the outbox relay did. Dropping them makes
    every delivery the same.
    """

    def get_message_headers(self, worker_ctx: Any) -> dict[str, Any]:
        headers = super().get_message_headers(worker_ctx)
        for key in (*IDENTITY_CONTEXT_KEYS, DELIVERY_CONTEXT_KEY):
            headers.pop(self._get_header_name(key), None)
        return headers


class DeliveredRpc(Rpc):
    """nameko's ``@rpc`` that also tells the worker which request message it is handling.

    The correlation id is the same on every delivery of one message, so a handler can recognise
    a redelivery (the broker or the service died before the ack) and answer it without redoing it.
    """

    def unpack_message_headers(self, message: Any) -> dict[str, Any]:
        data = super().unpack_message_headers(message)
        data.pop(DELIVERY_CONTEXT_KEY, None)  # only the broker's own property counts
        correlation_id = message.properties.get("correlation_id")
        # nameko sends a uuid; a client's own id longer than a key column holds is not used
        # (such a message is handled as one without an id).
        if correlation_id and len(str(correlation_id)) <= MAX_DELIVERY_ID:
            data[DELIVERY_CONTEXT_KEY] = str(correlation_id)
        return data


rpc = DeliveredRpc.decorator


class DeliveryId(DependencyProvider):
    """The correlation id of the request message being handled, if any."""

    def get_dependency(self, worker_ctx: Any) -> str | None:
        return worker_ctx.context_data.get(DELIVERY_CONTEXT_KEY)


class BrokerHealth(DependencyProvider):
    """Whether the broker accepts a new connection, for the health endpoint."""

    def setup(self) -> None:
        self.amqp_uri = self.container.config["AMQP_URI"]

    def get_dependency(self, worker_ctx: Any) -> BrokerHealth:
        return self

    def check(self) -> None:
        with Connection(self.amqp_uri, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=3)


def chunk_reader(storage: Storage) -> Callable[[Iterator[bytes]], Iterator[bytes]]:
    """Reads of a backend doing blocking I/O go through the thread pool, one chunk at a time.

    Each chunk is counted in ``media_sent_bytes_total`` when the server asks for the next one,
    that is once it has written this one: a chunk a gone client never got is not counted.
    """
    sent = metrics.sent_bytes

    def off_the_hub(chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            if storage.blocking_io:
                while (chunk := tpool.execute(next, chunks, None)) is not None:
                    yield chunk
                    sent.inc(len(chunk))
            else:
                for chunk in chunks:
                    yield chunk
                    sent.inc(len(chunk))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    return off_the_hub


BODY_READ_SIZE = 256 * 1024


def body_reader(timeout: float) -> Callable[[Any, int | None], Iterator[bytes]]:
    """Reads a request body as it arrives, in blocks: never the whole body in memory.

    A client that sends nothing for ``timeout`` seconds, or whose connection drops, ends the
    stream with :class:`StreamInterrupted` (a silent mobile client must not hold a worker).
    Every block read is counted in ``media_received_bytes_total{via="tus"}``.
    """
    received = metrics.received_bytes.labels("tus")

    def read(request: Any, length: int | None) -> Iterator[bytes]:
        stream = request.environ["wsgi.input"]
        chunked = request.headers.get("Transfer-Encoding", "").lower() == "chunked"
        remaining = length
        if remaining is None and not chunked:
            return  # no Content-Length and not chunked: HTTP/1.1 says there is no body
        while remaining is None or remaining > 0:
            want = BODY_READ_SIZE if remaining is None else min(BODY_READ_SIZE, remaining)
            try:
                with eventlet.Timeout(timeout):
                    block = stream.read(want)
            except eventlet.Timeout:
                raise StreamInterrupted(f"nothing arrived for {timeout:g} s") from None
            except (OSError, ValueError) as exc:
                raise StreamInterrupted(str(exc) or type(exc).__name__) from None
            if not block:
                if remaining is None:
                    return
                raise StreamInterrupted(f"the connection closed {remaining} bytes short")
            if remaining is not None:
                remaining -= len(block)
            received.inc(len(block))
            yield block

    return read


class SecureWebServer(WebServer):
    """nameko's web server, with the safe headers on every response it sends.

    Applied to the WSGI app rather than in handlers so that nameko's own answers (404 for an
    unknown path, 405 for a wrong method) carry them too.
    """

    def get_wsgi_app(self) -> Callable[..., Any]:
        app = super().get_wsgi_app()

        def secured(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            def start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
                present = {name.lower() for name, _ in headers}
                headers = headers + [
                    (name, value) for name, value in SAFE_HEADERS if name.lower() not in present
                ]
                return start_response(status, headers, *args)

            return app(environ, start)

        return secured

    def get_wsgi_server(self, *args: Any, **kwargs: Any) -> Any:
        server = super().get_wsgi_server(*args, **kwargs)
        # eventlet's access line would be a second line per request: Observability logs it.
        server.log_output = False
        return server


class SecureHttp(HttpRequestHandler):
    server = SecureWebServer()


http = SecureHttp.decorator


class ConfiguredTimer(Timer):
    """A timer whose interval is read from ``MEDIA.<key>`` in the config at start-up."""

    def __init__(self, key: str, default: float, **kwargs: Any) -> None:
        super().__init__(interval=default, **kwargs)
        self.key = key

    def setup(self) -> None:
        value = (self.container.config.get("MEDIA") or {}).get(self.key)
        if value is not None:
            self.interval = float(value)


configured_timer = ConfiguredTimer.decorator
