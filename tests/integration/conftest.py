"""The service started for real, called over RabbitMQ like a sibling service would call it."""

from __future__ import annotations

import collections
import socket
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import boto3
import eventlet
import pytest
from nameko.events import event_handler
from nameko.extensions import DependencyProvider

from services.media.client import media_rpc
from services.media.service import MediaService
from tests.conftest import SIGNING_KEY, load_config
from tests.s3server import MotoServer

EVENT_TYPES = ("media_created", "media_updated", "media_removed", "media_restored", "media_purged")


class EventLog:
    """Events as a subscriber receives them, in arrival order."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.identities: list[tuple[Any, Any]] = []
        self._arrived = eventlet.event.Event()

    def add(self, event_type: str, payload: dict[str, Any]) -> None:
        self.received.append((event_type, payload))
        if not self._arrived.ready():
            self._arrived.send()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        with eventlet.Timeout(
            timeout, TimeoutError(f"{count} events expected, got {self.types()}")
        ):
            while len(self.received) < count:
                eventlet.sleep(0.02)
        return list(self.received)

    def types(self) -> list[str]:
        return [event_type for event_type, _ in self.received]

    def counts(self) -> collections.Counter:
        return collections.Counter(payload["eventId"] for _, payload in self.received)


EVENTS = EventLog()


class ContextValue(DependencyProvider):
    """What a subscriber's worker sees of one context data key."""

    def __init__(self, key: str) -> None:
        self.key = key

    def get_dependency(self, worker_ctx: Any) -> Any:
        return worker_ctx.context_data.get(self.key)


def _handler(event_type: str) -> Callable:
    @event_handler("media", event_type)
    def handle(self: Any, payload: dict[str, Any]) -> None:
        EVENTS.add(event_type, payload)
        EVENTS.identities.append((self.user_id, self.roles))

    handle.__name__ = f"on_{event_type}"
    return handle


class Subscriber:
    """A sibling service listening to every media event, exactly as other teams write it."""

    name = "media_test_subscriber"
    user_id = ContextValue("user_id")
    roles = ContextValue("roles")
    locals().update({f"on_{event_type}": _handler(event_type) for event_type in EVENT_TYPES})


@pytest.fixture
def events() -> EventLog:
    EVENTS.received.clear()
    EVENTS.identities.clear()
    EVENTS._arrived = eventlet.event.Event()
    return EVENTS


@pytest.fixture
def service_config(
    rabbit_config: dict[str, Any], database_url: str, sessions: Any, tmp_path: Path
) -> dict[str, Any]:
    config = load_config(URL_SIGNING_KEY=SIGNING_KEY)
    config["AMQP_URI"] = rabbit_config["AMQP_URI"]
    config["DB_URIS"] = {"media:Base": database_url}
    config["STORAGE_ROOT"] = str(tmp_path / "storage")
    config["MEDIA"]["outbox_interval_seconds"] = 0.2
    config["MEDIA"]["processing_interval_seconds"] = 0.2
    port = free_port()
    config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{port}"
    config["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    return config


@pytest.fixture
def storage_root_for() -> Callable[[dict[str, Any]], Path]:
    return lambda config: Path(config["STORAGE_ROOT"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def media_service(runner_factory: Any, service_config: dict[str, Any], events: EventLog) -> Any:
    runner = runner_factory(service_config, MediaService, Subscriber)
    runner.start()
    return runner


@pytest.fixture
def connect(service_config: dict[str, Any]) -> Callable[..., AbstractContextManager[Any]]:
    """``with connect(user_id=...) as media:``: a standalone proxy, as a sibling holds one."""

    def proxy(user_id: str | None = None, roles: list[str] | None = None, timeout: float = 15):
        return media_rpc(service_config, timeout=timeout, user_id=user_id, roles=roles)

    return proxy


@pytest.fixture
def rpc(connect: Callable[..., Any], media_service: Any) -> Callable[..., Any]:
    """Like ``connect``, with the media service running."""
    return connect


# -- the service on S3 (a moto server on loopback) ---------------------------------------------

S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3_server():
    with MotoServer() as server:
        yield server


@pytest.fixture
def bucket(s3_server):
    client = boto3.session.Session().client(
        "s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1", **S3_CREDENTIALS
    )
    name = f"media-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield client, name
    client.close()


@pytest.fixture
def s3_service(runner_factory, service_config, s3_server, bucket):
    _, name = bucket
    service_config.update(
        STORAGE_BACKEND="s3",
        S3_BUCKET=name,
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        S3_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    # S3 stamps objects with its own clock: the tests sweep without a grace period.
    service_config["MEDIA"]["orphan_grace_seconds"] = 0
    runner = runner_factory(service_config, MediaService)
    runner.start()
    return runner
