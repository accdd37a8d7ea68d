"""The same service on the S3 backend (a real S3-compatible server on loopback), end to end."""

from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests
from nameko.testing.services import entrypoint_hook
from nameko.testing.utils import get_container
from sqlalchemy import update

from services.media.client import NotFound, StorageUnavailable
from services.media.core.ids import utcnow
from services.media.core.models import Media
from services.media.service import MediaService
from tests.files import noisy_png_bytes, one_page_pdf_bytes, pdf_bytes, upload_data

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _keys(client, bucket):
    return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_upload_stores_in_the_bucket_and_links_are_presigned(s3_service, connect, bucket):
    client, name = bucket
    data = noisy_png_bytes(200_000)
    with connect(user_id="u-1") as media:
        record = media.upload_file(upload_data(data, name="photo.png"))
        link = media.getUrl(record["id"], {"expiresIn": 300, "download": True})
    # The original (processing may already have put its variants beside it).
    (key,) = [key for key in _keys(client, name) if "." not in key]
    stored = client.head_object(Bucket=name, Key=key)
    assert stored["ContentType"] == "image/png" and stored["ContentLength"] == len(data)
    assert urlsplit(link["url"]).netloc == urlsplit(client.meta.endpoint_url).netloc
    response = requests.get(link["url"], timeout=30)
    assert response.status_code == 200 and response.content == data
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    # The record's own url for private media is a presigned link as well.
    assert requests.get(record["url"], timeout=30).content == data


def test_public_media_stream_from_s3_through_the_endpoint(s3_service, connect):
    with connect(user_id="u-1") as media:
        # A PDF that processes cleanly: a FAILED media is not served, and processing may finish
        # before the request below arrives.
        record = media.upload_file(upload_data(one_page_pdf_bytes(), name="a.pdf", isPublic=True))
    response = requests.get(record["url"], headers={"Range": "bytes=0-3"}, timeout=30)
    assert response.status_code == 206 and response.content == b"%PDF"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_purge_and_sweep_on_s3(s3_service, connect, bucket, sessions):
    client, name = bucket
    with connect(user_id="u-1") as media:
        gone = media.upload_file(upload_data(pdf_bytes(), name="gone.pdf"))
        media.remove(gone["id"])
    with sessions.begin() as session:
        session.execute(
            update(Media)
            .where(Media.id == gone["id"])
            .values(deleted_at=utcnow() - timedelta(days=31))
        )
    orphan = "media/2020/01/01/" + "0" * 32  # bytes of a crashed upload, long ago
    client.put_object(Bucket=name, Key=orphan, Body=b"x")
    container = get_container(s3_service, MediaService)
    with entrypoint_hook(container, "purge_expired") as purge:
        purge()
    assert _keys(client, name) == [orphan]
    with entrypoint_hook(container, "sweep_storage") as sweep:
        sweep()
    assert _keys(client, name) == []
    with connect() as media:
        with pytest.raises(NotFound):
            media.findOne(gone["id"])


def test_s3_endpoint_down_during_upload(s3_service, connect, s3_server, bucket):
    """A clear StorageUnavailable, and no record claiming bytes it does not have."""
    client, name = bucket
    with connect(user_id="u-1") as media:
        s3_server.stop()
        try:
            started = time.monotonic()
            with pytest.raises(StorageUnavailable, match="S3"):
                media.upload_file(upload_data(noisy_png_bytes(100_000)))
            assert time.monotonic() - started < 30
        finally:
            s3_server.start()
        client.create_bucket(Bucket=name)  # the restarted test server starts empty
        assert media.findAll({"withTotal": True})["total"] == 0
        record = media.upload_file(upload_data(pdf_bytes(), name="after.pdf"))
    assert record["status"] == "PROCESSING"
    assert len(_keys(client, name)) == 1
