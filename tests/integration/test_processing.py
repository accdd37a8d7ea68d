"""Processing with the service running: events a subscriber gets, variants over HTTP, and a
worker killed in the middle of a job."""

from __future__ import annotations

import io
import threading
from typing import Any

import eventlet
import pytest
import requests
from nameko.events import event_handler
from PIL import Image
from sqlalchemy import select

from services.media.core.models import Media
from services.media.processing import imaging
from services.media.service import MediaService
from tests import images
from tests.files import upload_data

PROCESSING_EVENTS: list[tuple[str, dict[str, Any]]] = []


class ProcessingSubscriber:
    """Another team's service waiting for thumbnails, as they would write it."""

    name = "media_processing_subscriber"

    @event_handler("media", "media_processed")
    def on_processed(self, payload: dict[str, Any]) -> None:
        PROCESSING_EVENTS.append(("media_processed", payload))

    @event_handler("media", "media_processing_failed")
    def on_failed(self, payload: dict[str, Any]) -> None:
        PROCESSING_EVENTS.append(("media_processing_failed", payload))


def _wait_for(media_id: str, timeout: float = 20) -> tuple[str, dict[str, Any]]:
    with eventlet.Timeout(timeout, TimeoutError(f"no processing event for {media_id}")):
        while True:
            for event_type, payload in PROCESSING_EVENTS:
                if payload["media"]["id"] == media_id:
                    return event_type, payload
            eventlet.sleep(0.05)


@pytest.fixture
def processing_service(runner_factory, service_config):
    PROCESSING_EVENTS.clear()
    runner = runner_factory(service_config, MediaService, ProcessingSubscriber)
    runner.start()
    return runner


def test_subscribers_learn_of_variants_and_fetch_them(processing_service, connect):
    with connect(user_id="u-1") as media:
        private = media.upload_file(upload_data(images.big_jpeg(), name="cover.jpg"))
        public = media.upload_file(upload_data(images.jpeg(), name="p.jpg", isPublic=True))
        broken = media.upload_file(upload_data(images.truncated(images.jpeg(400, 300))))
    assert private["status"] == "PROCESSING"

    event_type, payload = _wait_for(private["id"])
    assert event_type == "media_processed" and payload["media"]["status"] == "READY"
    thumbnail = next(v for v in payload["media"]["variants"] if v["name"] == "thumbnail")
    response = requests.get(thumbnail["url"], timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/webp"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert Image.open(io.BytesIO(response.content)).size == (256, 256)
    # The signature covers the variant: the same link for another variant is refused.
    tampered = thumbnail["url"].replace("variant=thumbnail", "variant=large")
    assert requests.get(tampered, timeout=10).status_code == 403

    _, payload = _wait_for(public["id"])
    small = next(v for v in payload["media"]["variants"] if v["name"] == "small")
    assert "signature=" not in small["url"]
    assert requests.get(small["url"], timeout=10).status_code == 200

    event_type, payload = _wait_for(broken["id"])
    assert event_type == "media_processing_failed"
    assert payload["media"]["status"] == "FAILED" and payload["reason"]


def test_a_worker_killed_mid_job_is_replaced_after_a_restart(
    runner_factory, service_config, connect, sessions, monkeypatch
):
    """The service dies while Pillow is busy with a photo; a new one finishes the job."""
    PROCESSING_EVENTS.clear()
    service_config["MEDIA"]["processing_lease_seconds"] = 1
    started, release = threading.Event(), threading.Event()
    real = imaging.process_image

    def stuck(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(30)  # a native thread: what the dead process never finished
        raise RuntimeError("this worker is dead")

    monkeypatch.setattr(imaging, "process_image", stuck)
    first = runner_factory(service_config, MediaService)
    first.start()
    with connect(user_id="u-1") as media:
        record = media.upload_file(upload_data(images.jpeg(640, 480)))
    with eventlet.Timeout(20):
        while not started.is_set():
            eventlet.sleep(0.05)
    first.kill()  # the process dies: no clean shutdown, the job's claim is left behind
    release.set()
    with sessions() as session:
        row = session.scalar(select(Media).where(Media.id == record["id"]))
        assert row.status == "PROCESSING" and row.processing_claim is not None

    monkeypatch.setattr(imaging, "process_image", real)
    second = runner_factory(service_config, MediaService, ProcessingSubscriber)
    second.start()
    event_type, payload = _wait_for(record["id"])
    assert event_type == "media_processed"
    assert len(payload["media"]["variants"]) == 4
    with connect(user_id="u-1") as media:
        assert media.findOne(record["id"])["status"] == "READY"
    assert [p["media"]["id"] for _, p in PROCESSING_EVENTS].count(record["id"]) == 1
