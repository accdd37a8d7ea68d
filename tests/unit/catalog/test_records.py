"""Reading, changing and deleting media through the entrypoints: access rules, optimistic
concurrency, soft delete, retention, idempotency and events."""

from __future__ import annotations

from datetime import timedelta

import eventlet
import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import OperationalError

from services.media.catalog.hygiene import Hygiene
from services.media.core.ids import utcnow
from services.media.core.models import IdempotencyKey, Media
from services.media.exceptions import (
    Conflict,
    Forbidden,
    NotFound,
    StorageUnavailable,
    ValidationError,
)
from tests.files import pdf_bytes, png_bytes, upload_data
from tests.unit.conftest import act_as, without_signed_url


def test_owner_reads_private_media_others_do_not(service):
    media = service.upload_file(upload_data())
    assert service.findOne(media["id"])["id"] == media["id"]
    act_as(service, "u-2")
    with pytest.raises(NotFound) as caught:
        service.findOne(media["id"])
    # Same error as a missing id: nothing leaks that the id exists.
    assert str(caught.value) == f"media {media['id']!r} not found"
    with pytest.raises(NotFound):
        service.update(media["id"], {"caption": "mine now"})
    with pytest.raises(NotFound):
        service.remove(media["id"])
    assert service.findAll()["items"] == []


def test_public_media_is_readable_but_not_changeable_by_others(service):
    media = service.upload_file(upload_data(isPublic=True))
    assert "signature" not in media["url"]
    act_as(service, "u-2")
    assert service.findOne(media["id"])["id"] == media["id"]
    with pytest.raises(Forbidden):
        service.update(media["id"], {"caption": "mine now"})
    with pytest.raises(Forbidden):
        service.remove(media["id"])


def test_admin_and_internal_calls_see_and_change_everything(service):
    media = service.upload_file(upload_data())
    act_as(service, "someone", "admin")
    assert service.update(media["id"], {"caption": "moderated"})["caption"] == "moderated"
    act_as(service, None)
    assert service.findOne(media["id"])["caption"] == "moderated"


def test_update_changes_fields_and_reports_them(service, dispatched):
    media = service.upload_file(upload_data(entityType="course", entityId="1"))
    updated = service.update(
        media["id"],
        {
            "isPublic": True,
            "tags": ["b", "a"],
            "caption": "Hi",
            "entityType": None,
            "entityId": None,
        },
    )
    assert updated["isPublic"] is True
    assert updated["tags"] == ["a", "b"]
    assert updated["entityType"] is None and updated["entityId"] is None
    assert updated["updatedAt"] > media["updatedAt"]
    assert dispatched.types() == ["media_created", "media_updated"]
    assert sorted(dispatched[1][1]["changes"]) == [
        "caption",
        "entityId",
        "entityType",
        "isPublic",
        "tags",
    ]


def test_update_without_a_change_sends_no_event(service, dispatched):
    media = service.upload_file(upload_data(tags=["a"]))
    same = service.update(media["id"], {"tags": ["A"]})
    assert same["updatedAt"] == media["updatedAt"]
    assert dispatched.types() == ["media_created"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"size": 1}, "size"),
        ({"userId": "u-2"}, "userId"),
        ({"entityType": "course"}, "entityId"),
        ({"isPublic": None}, "isPublic"),
        ({"expectedUpdatedAt": "yesterday"}, "expectedUpdatedAt"),
    ],
)
def test_update_rejects_what_may_not_change(service, dispatched, data, field):
    media = service.upload_file(upload_data())
    with pytest.raises(ValidationError) as caught:
        service.update(media["id"], data)
    assert field in caught.value.fields
    assert without_signed_url(service.findOne(media["id"])) == without_signed_url(media)
    assert dispatched.types() == ["media_created"]


def test_expected_updated_at(service):
    media = service.upload_file(upload_data())
    first = service.update(media["id"], {"caption": "one", "expectedUpdatedAt": media["updatedAt"]})
    with pytest.raises(Conflict, match="changed since"):
        service.update(media["id"], {"caption": "two", "expectedUpdatedAt": media["updatedAt"]})
    assert service.findOne(media["id"])["caption"] == "one"
    service.update(media["id"], {"caption": "two", "expectedUpdatedAt": first["updatedAt"]})


def test_a_redelivered_update_with_expected_updated_at_is_not_a_conflict(service, dispatched):
    """The broker delivers an applied update again (its ack was lost): its expectedUpdatedAt is
    now stale, but the change is its own."""
    media = service.upload_file(upload_data())
    change = {"caption": "one", "expectedUpdatedAt": media["updatedAt"]}
    service.delivery_id = "correlation-7"
    first = service.update(media["id"], dict(change))
    again = service.update(media["id"], dict(change))
    assert without_signed_url(again) == without_signed_url(first)
    assert dispatched.types() == ["media_created", "media_updated"]
    # Another message with the same stale expectation is a real conflict.
    service.delivery_id = "correlation-8"
    with pytest.raises(Conflict, match="changed since"):
        service.update(media["id"], {"caption": "two", "expectedUpdatedAt": media["updatedAt"]})
    # Once the record changed in any way since, the old message's redelivery conflicts too.
    service.remove(media["id"])
    service.restore(media["id"])
    service.delivery_id = "correlation-7"
    with pytest.raises(Conflict, match="changed since"):
        service.update(media["id"], dict(change))


def test_remove_is_soft_idempotent_and_restorable(service, storage, dispatched):
    media = service.upload_file(upload_data())
    removed = service.remove(media["id"])
    assert removed["status"] == "DELETED" and removed["deletedAt"].endswith("Z")
    assert service.remove(media["id"])["deletedAt"] == removed["deletedAt"]
    with pytest.raises(NotFound):
        service.findOne(media["id"])
    assert service.findAll()["items"] == []
    assert len(list(storage.iter_objects())) == 1  # bytes stay until retention ends
    restored = service.restore(media["id"])
    # Removed before it was processed: it is restored to wait for processing again.
    assert restored["status"] == "PROCESSING" and restored["deletedAt"] is None
    assert service.findOne(media["id"])["id"] == media["id"]
    assert dispatched.types() == ["media_created", "media_removed", "media_restored"]
    service.process_media()
    assert service.findOne(media["id"])["status"] == "READY"
    service.remove(media["id"])
    assert service.restore(media["id"])["status"] == "READY"


def _age_past_retention(sessions, settings, media_id):
    with sessions.begin() as session:
        session.execute(
            update(Media)
            .where(Media.id == media_id)
            .values(deleted_at=utcnow() - settings.retention - timedelta(seconds=1))
        )


def test_restore_after_retention_is_not_found(service, sessions, settings):
    media = service.upload_file(upload_data())
    service.remove(media["id"])
    _age_past_retention(sessions, settings, media["id"])
    with pytest.raises(NotFound, match="retention"):
        service.restore(media["id"])


def test_purge_deletes_bytes_then_row_and_reports_it(
    service, sessions, storage, settings, dispatched
):
    kept = service.upload_file(upload_data())
    gone = service.upload_file(upload_data(png_bytes(color="blue")))
    service.remove(kept["id"])
    service.remove(gone["id"])
    _age_past_retention(sessions, settings, gone["id"])
    service.purge_expired()
    act_as(service, None)
    remaining = service.findAll({"includeDeleted": True})["items"]
    assert [m["id"] for m in remaining] == [kept["id"]]
    assert len(list(storage.iter_objects())) == 1
    assert dispatched.types()[-1] == "media_purged"
    assert dispatched[-1][1]["media"]["id"] == gone["id"]
    service.purge_expired()  # nothing left to purge: no error, no event
    assert dispatched.types().count("media_purged") == 1


def test_remove_by_entity(service, dispatched):
    ids = [
        service.upload_file(upload_data(png_bytes(color=c), entityType="chat", entityId="m1"))["id"]
        for c in ("red", "green", "blue")
    ]
    other = service.upload_file(upload_data(entityType="chat", entityId="m2"))
    theirs = act_as(service, "u-2").upload_file(
        upload_data(user_id="u-2", entityType="chat", entityId="m1")
    )
    # A user removes only its own media of the entity; an internal cascade removes all.
    assert act_as(service, "u-1").removeByEntity("chat", "m1") == {"removed": 3}
    assert service.removeByEntity("chat", "m1") == {"removed": 0}
    assert act_as(service, None).removeByEntity("chat", "m1") == {"removed": 1}
    left = service.findByEntity("chat", "m1", {"includeDeleted": True})["items"]
    assert {m["id"] for m in left} == {*ids, theirs["id"]}
    assert all(m["status"] == "DELETED" for m in left)
    assert service.findOne(other["id"])["deletedAt"] is None
    assert dispatched.types().count("media_removed") == 4


def test_idempotency_key_returns_the_first_result(service, written, dispatched):
    first = service.upload_file(upload_data(idempotencyKey="k-1"))
    again = service.upload_file(upload_data(idempotencyKey="k-1"))
    assert without_signed_url(again) == without_signed_url(first)
    assert written.counts()["media"] == 1 and written.counts()["objects"] == 1
    assert dispatched.types() == ["media_created"]
    with pytest.raises(Conflict, match="different request"):
        service.upload_file(upload_data(pdf_bytes(), name="other.pdf", idempotencyKey="k-1"))
    # Keys are per user: another user's k-1 is a new request.
    other = act_as(service, "u-2").upload_file(upload_data(user_id="u-2", idempotencyKey="k-1"))
    assert other["id"] != first["id"]


def test_same_upload_delivered_twice_at_once_makes_one_record(service, written, catalog):
    """Nameko delivers at least once: two deliveries racing with one key make one record."""
    data = upload_data(idempotencyKey="race")
    pool = eventlet.GreenPool()
    results = list(pool.imap(lambda _: service.upload_file(dict(data)), range(2)))
    assert results[0]["id"] == results[1]["id"]
    assert written.counts() == {
        "media": 1,
        "outbox_events": 1,
        "idempotency_keys": 1,
        "objects": 1,
    }


def test_a_redelivered_request_message_is_answered_not_redone(service, written, dispatched):
    """The broker redelivers a message whose ack was lost: no key needed to avoid a duplicate."""
    service.delivery_id = "correlation-1"
    first = service.upload_file(upload_data())
    assert without_signed_url(service.upload_file(upload_data())) == without_signed_url(first)
    assert written.counts()["media"] == 1 and written.counts()["objects"] == 1
    assert dispatched.types() == ["media_created"]
    service.delivery_id = "correlation-2"
    assert service.upload_file(upload_data())["id"] != first["id"]


def test_delivery_keys_are_pruned_after_a_day(service, catalog, sessions):
    service.delivery_id = "correlation-1"
    first = service.upload_file(upload_data(idempotencyKey="mine"))
    service.delivery_id = "correlation-2"
    service.upload_file(upload_data(png_bytes(color="blue")))
    with sessions.begin() as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(days=2)))
    assert Hygiene(catalog).prune_delivery_keys() == 1
    # The caller's own key stays.
    assert service.upload_file(upload_data(idempotencyKey="mine"))["id"] == first["id"]


@pytest.mark.parametrize("bad", [None, 42, "", "x" * 256])
def test_bad_id_argument(service, bad):
    with pytest.raises(ValidationError, match="id: Must be a string"):
        service.findOne(bad)


def test_unknown_id_is_not_found(service):
    with pytest.raises(NotFound):
        service.findOne("does-not-exist")
    with pytest.raises(NotFound):
        service.remove("does-not-exist")


def test_a_change_made_between_our_read_and_our_write_is_a_conflict_not_a_lost_update(
    service, sessions, dispatched, monkeypatch
):
    """Another writer commits while this update is between reading the row and writing it.

    The interleaving is forced by running the other writer from inside this update (a second,
    real session), since two workers cannot be made to interleave on cue otherwise. PostgreSQL
    cannot interleave them at all: the update holds the row (FOR UPDATE), so the other writer
    waits; SQLite ignores FOR UPDATE, and the check on updated_at catches it instead.
    """
    import services.media.catalog.records as catalog_module

    media = service.upload_file(upload_data())
    real_apply = catalog_module._apply
    postgres = sessions.kw["bind"].dialect.name == "postgresql"
    blocked = []

    def apply_after_a_concurrent_change(row, changes):
        with sessions.begin() as other:
            if postgres:
                other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            try:
                other.execute(
                    update(Media)
                    .where(Media.id == row.id)
                    .values(caption="theirs", updated_at=utcnow() + timedelta(seconds=1))
                )
            except OperationalError:
                blocked.append(True)
                raise
        return real_apply(row, changes)

    monkeypatch.setattr(catalog_module, "_apply", apply_after_a_concurrent_change)
    if postgres:
        # The other writer gave up waiting for our row lock; its error ends this test's update.
        with pytest.raises(StorageUnavailable):
            service.update(media["id"], {"caption": "mine"})
        assert blocked == [True]
        assert service.findOne(media["id"])["caption"] is None
    else:
        with pytest.raises(Conflict, match="changed meanwhile"):
            service.update(media["id"], {"caption": "mine"})
        assert service.findOne(media["id"])["caption"] == "theirs"
    assert dispatched.types() == ["media_created"]
