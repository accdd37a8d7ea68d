"""Defects the fault suite found, each pinned down without killing anything."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nameko.testing.services import worker_factory

from services.media.core.identity import Caller
from services.media.service import MediaService
from tests.files import noisy_png_bytes

pytestmark = pytest.mark.faults

CHUNK = 1024


def test_a_stream_whose_completion_failed_reports_every_byte_as_received(catalog, settings):
    """A tus PATCH that stored the whole file but could not complete it (PostgreSQL restarting,
    the process killed) leaves the session UPLOADING with its short last part recorded. Its
    offset must be the file's size, so that the client's HEAD finishes the completion; it was
    counted as a whole part, an offset past the end, and the upload could never finish."""
    catalog.settings = replace(settings, upload_chunk_size=CHUNK)
    service = worker_factory(
        MediaService,
        catalog=catalog,
        caller=Caller("u-1"),
        dispatch=lambda *_: None,
        delivery_id=None,
    )
    data = noisy_png_bytes(3000)
    assert len(data) % CHUNK  # the last part is short
    started = service.initiateUpload({"originalName": "a.png", "userId": "u-1", "size": len(data)})
    streams = service.uploads
    assert streams.append(started["uploadId"], 0, [data], len(data)).end == len(data)
    # Where a completion that failed leaves the session:
    upload = streams.find(started["uploadId"])
    assert upload.status == "UPLOADING"
    assert streams.stream_offset(upload) == len(data)
    assert service.completeUpload(started["uploadId"])["size"] == len(data)
