"""A short subset of the image mode matrix (tests/unit/processing/test_image_modes.py) with
the service running: uploaded over RabbitMQ like a sibling service would, processed by the
service's own timer, and the variants fetched over HTTP with the links the record carries."""

from __future__ import annotations

import io

import eventlet
import pytest
import requests
from PIL import Image

from tests.files import upload_data
from tests.unit.processing.test_image_modes import (
    Case,
    check_rendition,
    encoded_source,
    expected_image,
)

SUBSET = [
    Case("I;16", "PNG"),
    Case("I;16", "TIFF"),
    Case("F", "TIFF"),
    Case("RGBA", "AVIF"),
    Case("RGB", "HEIF"),
    Case("CMYK", "JPEG", orientation=6),
    Case("P", "GIF", transparent_index=True),
    Case("RGB", "WEBP", profile="Display P3"),
]


def _ready(media, media_id: str, timeout: float = 30) -> dict:
    with eventlet.Timeout(timeout, TimeoutError(f"{media_id} still processing")):
        while True:
            record = media.findOne(media_id)
            if record["status"] != "PROCESSING":
                return record
            eventlet.sleep(0.1)


@pytest.mark.parametrize("case", SUBSET, ids=str)
def test_a_sibling_gets_every_mode_back_as_ready_variants(rpc, case):
    with rpc(user_id="u-1") as media:
        uploaded = media.upload_file(
            upload_data(encoded_source(case), name=f"case.{case.fmt.lower()}")
        )
        assert uploaded["status"] == "PROCESSING"
        done = _ready(media, uploaded["id"])
    assert done["status"] == "READY", done["processingError"]
    assert len(done["variants"]) == 4
    small = next(v for v in done["variants"] if v["name"] == "small")
    response = requests.get(small["url"], timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/webp"
    check_rendition(case, Image.open(io.BytesIO(response.content)), expected_image(case))
