"""The HTTP file endpoint and /health, called over real HTTP against the running service."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from services.media.core.models import Media
from services.media.core.settings import MediaSettings
from services.media.delivery.urls import MediaUrls
from tests.files import (
    HTML_PAGE,
    noisy_png_bytes,
    one_page_pdf_bytes,
    pdf_bytes,
    upload_data,
    write_playable_mp4,
)

NOSNIFF = ("X-Content-Type-Options", "nosniff")


def _get(url, **kwargs):
    response = requests.get(url, timeout=30, **kwargs)
    assert response.headers.get(NOSNIFF[0]) == NOSNIFF[1], (response.status_code, url)
    return response


def _with_query(url, **changes):
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query.update({key: value for key, value in changes.items() if value is not None})
    for key in [key for key, value in changes.items() if value is None]:
        query.pop(key, None)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def png(rpc):
    data = noisy_png_bytes(300_000)
    with rpc(user_id="u-1") as media:
        record = media.upload_file(upload_data(data, name="Café photo.png"))
    return record, data


def test_signed_link_serves_the_bytes_with_safe_headers(rpc, png):
    record, data = png
    with rpc(user_id="u-1") as media:
        link = media.getUrl(record["id"], {"expiresIn": 120})
    assert link["expiresAt"].endswith("Z")
    response = _get(link["url"])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"] == (
        "inline; filename=\"Cafe photo.png\"; filename*=UTF-8''Caf%C3%A9%20photo.png"
    )
    assert response.headers["ETag"] == '"sha256-' + hashlib.sha256(data).hexdigest() + '"'
    assert response.headers["Cache-Control"].startswith("private, max-age=")
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    # The record's own url is such a link too.
    assert _get(record["url"]).content == data


def test_download_links_are_attachments(rpc, png):
    record, _ = png
    with rpc(user_id="u-1") as media:
        url = media.getUrl(record["id"], {"download": True})["url"]
    assert _get(url).headers["Content-Disposition"].startswith("attachment;")


def test_link_expires(rpc, png):
    record, _ = png
    with rpc(user_id="u-1") as media:
        url = media.getUrl(record["id"], {"expiresIn": 1})["url"]
    assert _get(url).status_code == 200
    time.sleep(2.1)
    response = _get(url)
    assert response.status_code == 403
    assert "expired" in response.text


def test_tampered_links_are_refused(rpc, png):
    record, _ = png
    with rpc(user_id="u-1") as media:
        other = media.upload_file(upload_data(pdf_bytes(), name="b.pdf"))
        url = media.getUrl(record["id"])["url"]
    query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    signature = query["signature"]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for bad in [
        _with_query(url, signature=flipped),
        _with_query(url, expires=str(int(query["expires"]) + 60)),
        _with_query(url, download="1"),
        _with_query(url, kid="nope"),
        url.replace(record["id"], other["id"]),
    ]:
        assert _get(bad).status_code == 403, bad
    # Without any signature a private media is indistinguishable from a missing one, and with a
    # made-up signature too: the signature is judged before anyone looks the id up.
    assert _get(_with_query(url, signature=None, expires=None, kid=None)).status_code == 404
    made_up = _with_query(url, signature="0" * 64)
    unknown = made_up.replace(record["id"], "01a1fc2b-0000-7000-8000-000000000000")
    assert _get(made_up).status_code == _get(unknown).status_code == 403
    assert _get(made_up).text == _get(unknown).text


def test_a_rotated_key_still_works_during_its_grace(runner_factory, service_config, connect):
    from services.media.service import MediaService

    old_key, old_id = service_config["URL_SIGNING_KEY"], service_config["URL_SIGNING_KEY_ID"]
    service_config.update(
        URL_SIGNING_KEY="the-new-key-0123456789",
        URL_SIGNING_KEY_ID="k2",
        URL_SIGNING_PREVIOUS_KEY=old_key,
        URL_SIGNING_PREVIOUS_KEY_ID=old_id,
        URL_SIGNING_PREVIOUS_KEY_UNTIL="2999-01-01T00:00:00Z",
    )
    runner_factory(service_config, MediaService).start()
    with connect(user_id="u-1") as media:
        record = media.upload_file(upload_data())
        new_url = media.getUrl(record["id"])["url"]
    assert "kid=k2" in new_url and _get(new_url).status_code == 200
    # A link handed out before the rotation, signed with the old key.
    before = MediaSettings(
        public_base_url=service_config["PUBLIC_BASE_URL"],
        url_signing_key=old_key.encode(),
        url_signing_key_id=old_id,
    )
    row = Media(
        id=record["id"],
        is_public=False,
        external_url=None,
        storage_key=None,
        mime_type=record["mimeType"],
        original_name=record["originalName"],
    )
    old_url = MediaUrls(before, storage=_NoPresign()).link(row, timedelta(hours=1)).url
    assert f"kid={old_id}" in old_url
    assert _get(old_url).status_code == 200


class _NoPresign:
    def presigned_get_url(self, *args, **kwargs):
        return None


def test_deleted_and_unknown_ids_are_404(rpc, png):
    record, _ = png
    with rpc(user_id="u-1") as media:
        url = media.getUrl(record["id"])["url"]
        media.remove(record["id"])
    assert _get(url).status_code == 404
    base = url.split("/files/")[0]
    assert _get(f"{base}/files/no-such-id").status_code == 404


def test_public_media_need_no_signature_and_cache_long(rpc):
    with rpc(user_id="u-1") as media:
        # A PDF that processes cleanly: a FAILED media is not served, and processing may finish
        # before the request below arrives.
        syllabus = one_page_pdf_bytes()
        record = media.upload_file(upload_data(syllabus, name="syllabus.pdf", isPublic=True))
    assert "signature" not in record["url"]
    response = _get(record["url"])
    assert response.status_code == 200 and response.content == syllabus
    assert response.headers["Cache-Control"] == "public, max-age=604800"
    assert response.headers["Content-Disposition"].startswith("inline;")


def test_range_etag_and_head(rpc, png):
    record, data = png
    with rpc(user_id="u-1") as media:
        url = media.getUrl(record["id"])["url"]
    partial = _get(url, headers={"Range": "bytes=100-199"})
    assert partial.status_code == 206
    assert partial.content == data[100:200]
    assert partial.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = _get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    several = _get(url, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == data
    unsatisfiable = _get(url, headers={"Range": f"bytes={len(data)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(data)}"
    etag = _get(url).headers["ETag"]
    not_modified = _get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    head = requests.head(url, timeout=10)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data)) and head.content == b""
    assert head.headers[NOSNIFF[0]] == NOSNIFF[1]


def test_active_content_is_never_served_inline(runner_factory, service_config, connect):
    """Even if an operator allows HTML, SVG or unknown types, browsers only ever download them."""
    from services.media.service import MediaService

    policy = service_config["MEDIA"]["upload_policy"]
    policy["IMAGE"]["mime_types"] += ["image/svg+xml"]
    policy["OTHER"] = {"max_bytes": 1000, "mime_types": ["text/html", "application/octet-stream"]}
    runner_factory(service_config, MediaService).start()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    with connect(user_id="u-1") as media:
        for content, name in [
            (HTML_PAGE, "page.html"),
            (svg, "logo.svg"),
            # Fixed bytes no magic number matches (random ones sometimes look like an .exe).
            (bytes([0x9C, 0x1E, 0xA7, 0x33]) * 16, "blob.bin"),
        ]:
            record = media.upload_file(upload_data(content, name=name, isPublic=True))
            response = _get(record["url"])
            assert response.status_code == 200, name
            assert response.headers["Content-Disposition"].startswith("attachment;"), name
            assert "sandbox" in response.headers["Content-Security-Policy"]


def test_a_large_file_is_streamed(rpc, service_config, storage_root_for):
    """200 MB through the endpoint while the process's resident memory stays flat."""
    root = storage_root_for(service_config)
    key = "media/2026/11/21/" + "b" * 32
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 200 * 1024 * 1024
    # A playable video: processing starts at once and must not end FAILED (a FAILED media is
    # not served) before the request below arrives.
    write_playable_mp4(path, size)
    with rpc(user_id="u-1") as media:
        record = media.create({"storageKey": key, "userId": "u-1", "originalName": "big.mp4"})
        url = media.getUrl(record["id"])["url"]
    before = _rss()
    peak = before
    received = 0
    with requests.get(url, stream=True, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1024 * 1024):
            received += len(chunk)
            peak = max(peak, _rss())
    assert received == size
    assert peak - before < 64 * 1024 * 1024, f"grew by {(peak - before) >> 20} MiB"


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_health(rpc, service_config):
    response = _get(f"{service_config['PUBLIC_BASE_URL']}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {part: body[part]["ok"] for part in ("database", "broker", "storage")} == {
        "database": True,
        "broker": True,
        "storage": True,
    }
    # Which image decoders this machine has: all of them, AVIF and HEIC included.
    assert body["decoders"] == {
        name: True for name in ("jpeg", "png", "gif", "webp", "bmp", "tiff", "avif", "heif")
    }


def test_health_is_503_when_a_part_is_down(rpc, service_config, storage_root_for):
    root = storage_root_for(service_config)
    root.mkdir(parents=True, exist_ok=True)
    moved = root.with_name("storage-away")
    root.rename(moved)
    try:
        response = _get(f"{service_config['PUBLIC_BASE_URL']}/health")
    finally:
        moved.rename(root)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["storage"]["ok"] is False and body["storage"]["error"]
    assert body["database"] == {"ok": True} and body["broker"] == {"ok": True}


def test_bytes_missing_behind_a_ready_record_is_404_not_an_error_page(
    rpc, png, storage_root_for, service_config
):
    record, _ = png
    with rpc(user_id="u-1") as media:
        url = media.getUrl(record["id"])["url"]
    for path in storage_root_for(service_config).rglob("*"):
        if path.is_file():
            path.unlink()
    response = _get(url)
    assert response.status_code == 404


def test_the_servers_own_answers_carry_the_safe_headers_too(rpc, service_config):
    base = service_config["PUBLIC_BASE_URL"]
    assert _get(f"{base}/files/a/b").status_code == 404
    assert _get(f"{base}/nothing-here").status_code == 404
    response = requests.post(f"{base}/health", timeout=10)
    assert response.status_code == 405
    assert response.headers[NOSNIFF[0]] == NOSNIFF[1]


def test_last_modified_and_if_modified_since(rpc, png):
    record, _ = png
    with rpc(user_id="u-1") as media:
        url = media.getUrl(record["id"])["url"]
    last_modified = _get(url).headers["Last-Modified"]
    assert last_modified.endswith(" GMT")
    assert _get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert _get(url, headers={"If-Modified-Since": old}).status_code == 200
    assert _get(url, headers={"If-None-Match": "*"}).status_code == 304
    # If-None-Match decides when both are sent.
    both = {"If-None-Match": '"other"', "If-Modified-Since": last_modified}
    assert _get(url, headers=both).status_code == 200
