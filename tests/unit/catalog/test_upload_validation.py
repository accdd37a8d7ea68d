"""Every bad upload gets the right typed error naming the field, and writes nothing."""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import replace

import pytest

from services.media.exceptions import (
    Forbidden,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationError,
)
from tests.files import HTML_PAGE, pdf_bytes, png_bytes, upload_data
from tests.unit.conftest import act_as


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"content": None}, "content", "Field may not be null."),
        ({"userId": 42}, "userId", "Not a valid string."),
        ({"isPublic": "yes"}, "isPublic", "Not a valid boolean."),
        ({"isPublic": 1}, "isPublic", "Not a valid boolean."),
        ({"tags": "a,b"}, "tags", "Not a valid list."),
        ({"metadata": ["x"]}, "metadata", "Not a valid mapping type."),
        ({"colour": "red"}, "colour", "Unknown field."),
        ({"entityType": "course"}, "entityId", "entityType and entityId must be given together."),
        ({"entityId": "42"}, "entityType", "entityType and entityId must be given together."),
        ({"metadata": {"blob": "x" * 70_000}}, "metadata", "Must be at most 65536 bytes as JSON."),
        ({"content": "not base64!"}, "content", "Not valid base64."),
        ({"content": "QUJD*EFC"}, "content", "Not valid base64."),
        ({"content": ""}, "content", "The file is empty."),
        ({"originalName": "\u202e\x00/"}, "originalName", "Must contain a visible file name."),
        ({"tags": ["ok", ""]}, "tags.1", "Each tag must be 1-64 visible characters."),
        ({"folder": "a/../b"}, "folder", "Each folder segment must be 1-128 visible"),
        ({"folder": "/".join(["x" * 100] * 11)}, "folder", "Must be at most 1024 characters."),
    ],
)
def test_bad_field_is_a_validation_error_naming_it(service, written, change, field, message):
    data = upload_data(**change)
    with pytest.raises(ValidationError) as caught:
        service.upload_file(data)
    assert field in caught.value.fields
    assert any(m.startswith(message) for m in caught.value.fields[field])
    assert field in str(caught.value)
    written.assert_nothing()


@pytest.mark.parametrize("missing", ["content", "originalName", "userId"])
def test_missing_required_field(service, written, missing):
    data = upload_data()
    del data[missing]
    with pytest.raises(ValidationError) as caught:
        service.upload_file(data)
    assert caught.value.fields == {missing: ["Missing data for required field."]}
    written.assert_nothing()


def test_data_that_is_not_an_object(service, written):
    with pytest.raises(ValidationError, match="data: Must be a JSON object"):
        service.upload_file(["content"])
    written.assert_nothing()


def test_file_over_the_policy_size(service, written, settings):
    small = {
        media_type: replace(rule, max_bytes=100)
        for media_type, rule in settings.upload_policy.items()
    }
    service.catalog.settings = replace(settings, upload_policy=small)
    with pytest.raises(PayloadTooLarge, match="at most 100 bytes; this one is 325"):
        service.upload_file(upload_data(pdf_bytes() + b"%" * 200, name="notes.pdf"))
    written.assert_nothing()


def test_payload_over_the_rpc_cap_is_refused_before_decoding(service, written, settings):
    cap = settings.rpc_max_content_bytes
    # Not even valid base64: the cap is checked on the length before anything is decoded.
    oversized = "!" * (4 * (cap // 3 + 2))
    with pytest.raises(PayloadTooLarge, match="over the RPC limit"):
        service.upload_file(upload_data(content=oversized))
    written.assert_nothing()


@pytest.mark.parametrize(("size", "refused"), [(301, True), (300, False)])
def test_rpc_cap_is_exact(service, settings, size, refused):
    service.catalog.settings = replace(settings, rpc_max_content_bytes=300)
    data = upload_data(pdf_bytes() + b"%" * (size - len(pdf_bytes())), name="a.pdf")
    if refused:
        with pytest.raises(PayloadTooLarge, match="over the RPC limit of 300 bytes"):
            service.upload_file(data)
    else:
        assert service.upload_file(data)["size"] == 300


def test_disallowed_type(service, written):
    with pytest.raises(UnsupportedMediaType, match="application/x-sh"):
        service.upload_file(upload_data(b"#!/bin/sh\nrm -rf /\n", name="run.png"))
    written.assert_nothing()


def test_html_declared_as_png(service, written):
    with pytest.raises(UnsupportedMediaType, match="content, which is text/html"):
        service.upload_file(upload_data(HTML_PAGE, name="cat.png", mimeType="image/png"))
    written.assert_nothing()


def test_html_with_no_declared_type_is_still_refused(service, written):
    with pytest.raises(UnsupportedMediaType, match="text/html are not accepted"):
        service.upload_file(upload_data(HTML_PAGE, name="cat.png"))
    written.assert_nothing()


def test_declared_type_is_only_a_hint_within_a_family(service):
    """A PNG declared as image/jpeg is stored as what it is."""
    media = service.upload_file(upload_data(png_bytes(), name="x.jpg", mimeType="image/jpeg"))
    assert media["mimeType"] == "image/png"
    assert media["type"] == "IMAGE"


def test_image_bomb_is_refused(service, written):
    """A PNG header claiming 20000x20000 pixels is refused before any pixel is decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")
    with pytest.raises(UnsupportedMediaType, match="too many pixels"):
        service.upload_file(upload_data(bomb))
    written.assert_nothing()


def test_uploading_as_someone_else_is_forbidden(service, written):
    act_as(service, "u-2")
    with pytest.raises(Forbidden, match="userId"):
        service.upload_file(upload_data(user_id="u-1"))
    written.assert_nothing()


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("cat\x00.png", "cat.png"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("a" * 300 + ".png", "a" * 251 + ".png"),
        ("é" * 200 + ".png", "é" * 125 + ".png"),
    ],
)
def test_hostile_names_are_stored_for_display_only(service, storage, name, stored):
    media = service.upload_file(upload_data(name=name))
    assert media["originalName"] == stored
    assert len(media["originalName"].encode()) <= 255
    # The bytes live under a server-generated key, whatever the name said.
    (info,) = list(storage.iter_objects())
    assert info.key.startswith("media/")
    assert stored not in info.key


def test_upload_records_what_the_bytes_are(service, storage, dispatched):
    data = png_bytes(40, 30)
    media = service.upload_file(
        upload_data(
            data,
            name="x.txt",
            mimeType="image/png",
            entityType="course",
            entityId="42",
            metadata={"lesson": 3},
            tags=["Intro", "intro", "week-1"],
            folder="/courses/42/",
            altText="A red square",
        )
    )
    assert media["type"] == "IMAGE"
    assert media["mimeType"] == "image/png"
    assert media["size"] == len(data)
    assert media["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (media["width"], media["height"]) == (40, 30)
    assert media["tags"] == ["intro", "week-1"]
    assert media["folder"] == "courses/42"
    # Committed, and processed off the request path (facts and variants come then).
    assert media["status"] == "PROCESSING"
    assert media["createdAt"].endswith("Z")
    assert "signature=" in media["url"]  # private by default: a signed link
    (info,) = list(storage.iter_objects())
    assert b"".join(storage.iter_chunks(info.key)) == data
    assert dispatched.types() == ["media_created"]
    payload = dispatched[0][1]
    assert payload["media"] == media
    assert payload["eventId"] and payload["occurredAt"].endswith("Z")
