"""The eight core patterns and friends, end to end over real RabbitMQ, with a real subscriber."""

from __future__ import annotations

import eventlet
import pytest
from nameko.exceptions import RemoteError, registry

from services.media.client import NotFound, PayloadTooLarge, ValidationError
from tests.files import b64, noisy_png_bytes, pdf_bytes, png_bytes, upload_data


def test_a_sibling_stores_finds_changes_and_deletes_media(rpc, events, storage_root):
    with rpc(user_id="u-1") as media:
        image = media.upload_file(
            upload_data(png_bytes(64, 48), entityType="course", entityId="42", tags=["Intro"])
        )
        doc = media.upload_file(upload_data(pdf_bytes(), name="syllabus.pdf", isPublic=True))
        assert image["type"] == "IMAGE" and (image["width"], image["height"]) == (64, 48)
        assert doc["type"] == "DOCUMENT" and doc["mimeType"] == "application/pdf"

        assert media.findOne(image["id"])["checksum"] == image["checksum"]
        assert [m["id"] for m in media.findByUser("u-1")["items"]] == [doc["id"], image["id"]]
        assert [m["id"] for m in media.findByEntity("course", "42")["items"]] == [image["id"]]
        page = media.findAll({"type": "DOCUMENT", "withTotal": True})
        assert page["total"] == 1 and page["nextCursor"] is None

        updated = media.update(image["id"], {"isPublic": True, "caption": "Lecture 1"})
        assert updated["isPublic"] is True and updated["caption"] == "Lecture 1"
        removed = media.remove(doc["id"])
        assert removed["status"] == "DELETED"
        restored = media.restore(doc["id"])
        assert restored["status"] != "DELETED" and restored["deletedAt"] is None
        assert media.removeByEntity("course", "42") == {"removed": 1}

    received = events.wait_for(6)
    assert events.types() == [
        "media_created",
        "media_created",
        "media_updated",
        "media_removed",
        "media_restored",
        "media_removed",
    ]
    created = received[0][1]
    assert created["media"]["id"] == image["id"] and created["occurredAt"].endswith("Z")
    assert sorted(received[2][1]["changes"]) == ["caption", "isPublic"]
    assert received[5][1]["media"]["status"] == "DELETED"
    assert all(count == 1 for count in events.counts().values())
    # Events carry no caller identity: a subscriber calling back acts as itself.
    assert set(events.identities) == {(None, None)}
    # The bytes really are on disk under server-made keys (variants, if made yet, beside them).
    files = [p for p in storage_root.rglob("*") if p.is_file()]
    assert len([p for p in files if "." not in p.name]) == 2


def test_errors_arrive_as_the_contract_types(rpc):
    with rpc(user_id="u-1") as media:
        with pytest.raises(NotFound):
            media.findOne("missing")
        with pytest.raises(ValidationError) as caught:
            media.upload_file({"originalName": "x.png", "userId": "u-1", "extra": 1})
        assert caught.value.fields == {
            "content": ["Missing data for required field."],
            "extra": ["Unknown field."],
        }


def test_callers_without_the_client_module_see_remote_error_names(rpc, monkeypatch):
    for path in [key for key in registry if key.startswith("services.media.exceptions.")]:
        monkeypatch.delitem(registry, path)
    with rpc(user_id="u-1") as media:
        with pytest.raises(RemoteError) as caught:
            media.findOne("missing")
    assert caught.value.exc_type == "NotFound"


def test_identity_comes_from_context_data(rpc):
    with rpc(user_id="u-1") as media:
        private = media.upload_file(upload_data())
    with rpc(user_id="u-2") as media:
        with pytest.raises(NotFound):
            media.findOne(private["id"])
        assert media.findByUser("u-1")["items"] == []
    with rpc(user_id="mod", roles=["admin"]) as media:
        assert media.findOne(private["id"])["id"] == private["id"]
    with rpc() as media:  # trusted internal call
        assert media.findOne(private["id"])["id"] == private["id"]


def test_payload_over_the_rpc_cap_is_refused_through_the_broker(rpc, service_config):
    cap = service_config["MEDIA"]["rpc_max_content_bytes"]
    content = b64(b"\0" * (cap + 3))
    with rpc(user_id="u-1") as media:
        with pytest.raises(PayloadTooLarge):
            media.upload_file(upload_data(content=content))
        assert media.findAll()["items"] == []


def test_a_large_upload_within_the_cap(rpc):
    data = noisy_png_bytes(6 * 1024 * 1024)
    with rpc(user_id="u-1") as media:
        stored = media.upload_file(upload_data(data, name="big.png"))
    assert stored["size"] == len(data)


def test_same_upload_delivered_twice_with_one_key_makes_one_record(rpc, events):
    data = upload_data(idempotencyKey="upload-7")

    def call():
        with rpc(user_id="u-1") as media:
            return media.upload_file(dict(data))

    first, second = eventlet.GreenPool().imap(lambda _: call(), range(2))
    assert first["id"] == second["id"]
    with rpc(user_id="u-1") as media:
        assert [m["id"] for m in media.findAll()["items"]] == [first["id"]]
    events.wait_for(1)
    eventlet.sleep(0.5)
    assert events.types() == ["media_created"]
