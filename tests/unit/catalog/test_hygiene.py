"""Lifecycle jobs: the orphan sweeper, records whose bytes vanished, and concurrent purges."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta

import eventlet
from nameko.testing.services import worker_factory
from sqlalchemy import update

from services.media.catalog.records import MediaCatalog
from services.media.core.identity import Caller
from services.media.core.ids import utcnow
from services.media.core.models import Media
from services.media.service import MediaService
from storage import LocalStorage, new_key
from tests.files import png_bytes, upload_data
from tests.unit.conftest import Dispatched, act_as

# Plain text is READY at once (nothing to process), which keeps these tests about storage.
NOTES = b"lecture notes\n"


def _age_file(storage_root, key, seconds):
    path = storage_root / key
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_crash_between_writing_bytes_and_the_commit_leaves_an_orphan_the_sweeper_removes(
    service, storage, storage_root
):
    owned = service.upload_file(upload_data(NOTES, name="notes.txt"))
    # What a worker killed after storage.put and before its commit leaves behind:
    orphan = new_key()
    storage.put(orphan, [png_bytes()], "image/png")
    fresh = new_key()  # an upload in flight right now: its record is about to commit
    storage.put(fresh, [png_bytes()], "image/png")
    foreign = "imports/2026/not-ours.bin"  # registered later through create(); never ours
    storage.put(foreign, [b"x"], "application/octet-stream")
    for key in (orphan, foreign, *[i.key for i in storage.iter_objects() if i.key != fresh]):
        _age_file(storage_root, key, 2 * 3600)

    service.sweep_storage()
    keys = {info.key for info in storage.iter_objects()}
    assert orphan not in keys
    assert {fresh, foreign} <= keys
    assert service.findOne(owned["id"])["status"] == "READY"
    assert len(keys) == 3


def test_a_record_whose_bytes_vanished_is_marked_failed_not_deleted(
    service, storage, sessions, dispatched, caplog
):
    media = service.upload_file(upload_data(NOTES, name="notes.txt"))
    kept = service.upload_file(upload_data(NOTES + b"more\n", name="more.txt"))
    with sessions.begin() as session:
        session.execute(update(Media).values(created_at=utcnow() - timedelta(hours=2)))
        key = session.get(Media, media["id"]).storage_key
    storage.delete(key)
    with caplog.at_level(logging.ERROR):
        service.sweep_storage()
    assert service.findOne(media["id"])["status"] == "FAILED"
    assert service.findOne(kept["id"])["status"] == "READY"
    assert f"media {media['id']} is FAILED" in caplog.text
    assert dispatched.types()[-1] == "media_updated"
    assert dispatched[-1][1]["changes"] == ["status"]
    service.sweep_storage()  # nothing new: no second event
    assert dispatched.types().count("media_updated") == 1


class CountingStorage(LocalStorage):
    """Real disk; counts the deletes that removed something."""

    deleted: list[str]

    def delete(self, key: str) -> bool:
        removed = super().delete(key)
        if removed:
            self.deleted.append(key)
        eventlet.sleep(0)  # let the other purge run in between
        return removed


def test_two_purges_at_once_delete_each_object_once(sessions, storage_root, settings):
    storage = CountingStorage(storage_root)
    storage.deleted = []

    def worker():
        catalog = MediaCatalog(sessions=sessions, storage=storage, settings=settings)
        return worker_factory(
            MediaService,
            catalog=catalog,
            caller=Caller("u-1"),
            dispatch=Dispatched(),
            delivery_id=None,
        )

    uploader = worker()
    ids = [uploader.upload_file(upload_data(png_bytes(color=f"#{i:06x}")))["id"] for i in range(6)]
    for media_id in ids:
        uploader.remove(media_id)
    with sessions.begin() as session:
        session.execute(
            update(Media).values(deleted_at=utcnow() - settings.retention - timedelta(seconds=1))
        )
    first, second = worker(), worker()
    pool = eventlet.GreenPool()
    pool.spawn(first.purge_expired)
    pool.spawn(second.purge_expired)
    pool.waitall()
    assert sorted(storage.deleted) == sorted(set(storage.deleted))
    assert len(storage.deleted) == 6
    assert list(storage.iter_objects()) == []
    purged = first.dispatch.types() + second.dispatch.types()
    assert purged.count("media_purged") == 6
    act_as(uploader, None)
    assert uploader.findAll({"includeDeleted": True})["items"] == []


def test_a_store_that_looks_empty_is_not_taken_for_lost_bytes(
    service, storage, storage_root, sessions, dispatched, caplog
):
    """An unmounted volume or a wrong bucket must not turn every record FAILED."""
    ids = [
        service.upload_file(upload_data(NOTES + b"%d\n" % i, name="n.txt"))["id"] for i in range(25)
    ]
    with sessions.begin() as session:
        session.execute(update(Media).values(created_at=utcnow() - timedelta(hours=2)))
    for info in list(storage.iter_objects()):
        storage.delete(info.key)
    with caplog.at_level(logging.ERROR):
        service.sweep_storage()
    assert "all 25 objects checked are missing" in caplog.text
    assert {service.findOne(media_id)["status"] for media_id in ids} == {"READY"}
    assert "media_updated" not in dispatched.types()
