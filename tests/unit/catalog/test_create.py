"""create(): registering bytes already in storage, or an external URL."""

from __future__ import annotations

import hashlib

import pytest

from services.media.exceptions import (
    Conflict,
    NotFound,
    UnsupportedMediaType,
    ValidationError,
)
from tests.files import HTML_PAGE, pdf_bytes
from tests.unit.conftest import without_signed_url


@pytest.fixture
def stored_pdf(storage):
    data = pdf_bytes()
    storage.put("imports/2026/syllabus.pdf", [data], "application/octet-stream")
    return "imports/2026/syllabus.pdf", data


def test_create_reads_size_type_and_checksum_from_storage(service, stored_pdf, dispatched):
    key, data = stored_pdf
    media = service.create({"storageKey": key, "userId": "u-1", "mimeType": "application/pdf"})
    assert media["type"] == "DOCUMENT" and media["mimeType"] == "application/pdf"
    assert media["size"] == len(data)
    assert media["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert media["originalName"] == "syllabus.pdf"
    assert dispatched.types() == ["media_created"]


def test_create_with_an_idempotency_key_replays(service, stored_pdf, written):
    key, _ = stored_pdf
    request = {"storageKey": key, "userId": "u-1", "idempotencyKey": "import-1"}
    first = service.create(dict(request))
    assert without_signed_url(service.create(dict(request))) == without_signed_url(first)
    assert written.counts()["media"] == 1
    with pytest.raises(Conflict, match="different request"):
        service.create({**request, "caption": "changed"})


def test_name_from_an_url_is_sanitised(service):
    media = service.create(
        {"url": "https://cdn.example.com/a/%E2%80%AEgpj.exe#frag?x", "userId": "u-1"}
    )
    assert media["originalName"] == "gpj.exe"


def test_an_object_belongs_to_one_record(service, stored_pdf):
    key, _ = stored_pdf
    service.create({"storageKey": key, "userId": "u-1"})
    with pytest.raises(Conflict, match="already belongs"):
        service.create({"storageKey": key, "userId": "u-1", "originalName": "again.pdf"})


@pytest.mark.parametrize("key", ["imports/none.pdf", "../../etc/passwd", "/etc/passwd"])
def test_missing_or_unsafe_key_is_not_found(service, written, key):
    with pytest.raises(NotFound):
        service.create({"storageKey": key, "userId": "u-1"})
    written.assert_nothing()


def test_stored_html_is_refused(service, storage):
    storage.put("imports/page.png", [HTML_PAGE], "image/png")
    with pytest.raises(UnsupportedMediaType, match="text/html"):
        service.create({"storageKey": "imports/page.png", "userId": "u-1"})


def test_external_url(service):
    media = service.create(
        {"url": "https://cdn.example.com/v/intro.mp4?x=1", "userId": "u-1", "mimeType": "video/mp4"}
    )
    assert media["url"] == "https://cdn.example.com/v/intro.mp4?x=1"
    assert (media["type"], media["mimeType"], media["size"]) == ("VIDEO", "video/mp4", 0)
    assert media["originalName"] == "intro.mp4"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"userId": "u-1"}, "storageKey"),
        ({"userId": "u-1", "url": "https://cdn.example.com/y", "storageKey": "a/b"}, "storageKey"),
        ({"userId": "u-1", "url": "javascript:alert(1)"}, "url"),
        ({"userId": "u-1", "url": "file:///etc/passwd"}, "url"),
        ({"url": "https://cdn.example.com/y"}, "userId"),
        ({"userId": "u-1", "url": "https://cdn.example.com/y", "content": "AAAA"}, "content"),
    ],
)
def test_bad_create(service, written, data, field):
    with pytest.raises(ValidationError) as caught:
        service.create(data)
    assert field in caught.value.fields
    written.assert_nothing()
