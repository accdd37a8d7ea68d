"""Upload sessions over RPC: parts in any order, progress, verification, cancel and expiry."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import update

import services.media.uploads.sessions as uploads_module
from services.media.catalog.hygiene import Hygiene
from services.media.core.identity import INTERNAL
from services.media.core.ids import utcnow
from services.media.core.models import UploadSession
from services.media.exceptions import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    UnsupportedMediaType,
    ValidationError,
)
from services.media.uploads import streams
from services.media.uploads.sessions import ChecksumMismatch, OffsetMismatch, StreamInterrupted
from storage.errors import StorageUnavailable
from storage.local import UPLOAD_PREFIX
from tests.files import HTML_PAGE, noisy_png_bytes
from tests.unit.conftest import act_as

CHUNK = 1024


@pytest.fixture
def uploads(service, settings):
    # Small parts keep the tests fast; production parts are 8 MiB.
    service.catalog.settings = replace(settings, upload_chunk_size=CHUNK)
    return service


def _start(service, data, **extra):
    request = {"originalName": "photo.png", "userId": "u-1", "size": len(data)} | extra
    return service.initiateUpload(request)


def _part(service, upload_id, data, number):
    offset = (number - 1) * CHUNK
    piece = data[offset : offset + CHUNK]
    return service.uploadPart(upload_id, offset, base64.b64encode(piece).decode())


def _staged_files(storage_root):
    return [p for p in storage_root.rglob("*") if p.is_file()] if storage_root.exists() else []


def test_parts_in_any_order_become_one_verified_media(uploads, storage, dispatched):
    data = noisy_png_bytes(3000)
    checksum = "sha256:" + hashlib.sha256(data).hexdigest()
    started = _start(uploads, data, checksum=checksum, tags=["trip"], isPublic=True)
    assert started["status"] == "PENDING" and started["chunkSize"] == CHUNK
    assert started["expiresAt"].endswith("Z")
    assert started["uploadUrl"].endswith(f"/uploads/{started['uploadId']}")
    assert started["uploadToken"].startswith(started["uploadId"] + ".")
    assert started["directUpload"] is None
    parts = -(-len(data) // CHUNK)
    seen = []
    for number in [parts, 1, *range(2, parts), 1]:  # last first, and part 1 twice
        progress = _part(uploads, started["uploadId"], data, number)
        seen.append(progress["bytesUploaded"])
        assert progress["status"] == "UPLOADING"
        assert progress["percentComplete"] < 100
    assert seen == sorted(seen)  # monotone, and the repeated part changed nothing
    assert progress["bytesUploaded"] == len(data)
    assert progress["speed"] > 0 and progress["remainingTime"] == 0

    media = uploads.completeUpload(started["uploadId"])
    assert media["status"] == "PROCESSING" and media["size"] == len(data)
    assert media["checksum"] == checksum and media["mimeType"] == "image/png"
    assert media["tags"] == ["trip"] and media["isPublic"] is True
    stored = b"".join(storage.iter_chunks(next(iter(storage.iter_objects())).key))
    assert stored == data
    done = uploads.getUploadProgress(started["uploadId"])
    assert done["status"] == "READY" and done["percentComplete"] == 100
    assert done["mediaId"] == media["id"] and done["completedAt"].endswith("Z")
    assert uploads.completeUpload(started["uploadId"]) == media  # completing again is harmless
    assert dispatched.types() == ["media_created"]


def test_progress_midway(uploads):
    data = noisy_png_bytes(5000)
    upload_id = _start(uploads, data)["uploadId"]
    progress = _part(uploads, upload_id, data, 1)
    assert progress["bytesUploaded"] == CHUNK and progress["totalBytes"] == len(data)
    assert 0 < progress["percentComplete"] < 100
    assert progress["speed"] > 0
    assert progress["remainingTime"] == pytest.approx((len(data) - CHUNK) / progress["speed"], 0.1)


@pytest.mark.parametrize(
    ("offset", "content", "error", "message"),
    [
        (100, b"x" * CHUNK, ValidationError, "multiple of chunkSize"),
        (0, b"x" * 10, ValidationError, "must be chunkSize"),
        (-1024, b"x" * CHUNK, ValidationError, "0 or more"),
        (2 * CHUNK, b"x" * CHUNK, PayloadTooLarge, "past the declared size"),
        (0, None, ValidationError, "non-empty base64"),
    ],
)
def test_bad_parts(uploads, storage_root, offset, content, error, message):
    data = noisy_png_bytes(2000)
    upload_id = _start(uploads, data)["uploadId"]
    encoded = None if content is None else base64.b64encode(content).decode()
    with pytest.raises(error, match=message):
        uploads.uploadPart(upload_id, offset, encoded)
    assert uploads.getUploadProgress(upload_id)["bytesUploaded"] == 0


def test_invalid_base64_part(uploads):
    upload_id = _start(uploads, noisy_png_bytes(2000))["uploadId"]
    with pytest.raises(ValidationError, match="Not valid base64"):
        uploads.uploadPart(upload_id, 0, "!!!!")


def test_a_client_lying_about_its_size_is_stopped_at_the_limit(uploads):
    declared = noisy_png_bytes(1500)
    upload_id = _start(uploads, declared)["uploadId"]
    _part(uploads, upload_id, declared, 1)
    with pytest.raises(PayloadTooLarge, match="past the declared size"):
        uploads.uploadPart(upload_id, CHUNK, base64.b64encode(b"y" * CHUNK).decode())


def test_completing_with_parts_missing(uploads):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    _part(uploads, upload_id, data, 1)
    with pytest.raises(Conflict, match=r"missing at offsets \[1024, 2048, "):
        uploads.completeUpload(upload_id)
    assert uploads.getUploadProgress(upload_id)["status"] == "UPLOADING"


def test_a_wrong_checksum_fails_and_leaves_nothing(uploads, storage_root, written):
    data = noisy_png_bytes(1500)
    upload_id = _start(uploads, data, checksum="sha256:" + "0" * 64)["uploadId"]
    for number in (1, 2):
        _part(uploads, upload_id, data, number)
    with pytest.raises(Conflict, match="not the declared"):
        uploads.completeUpload(upload_id)
    progress = uploads.getUploadProgress(upload_id)
    assert progress["status"] == "FAILED" and "checksum" in progress["failureReason"]
    assert _staged_files(storage_root) == []
    assert written.counts()["media"] == 0


def test_a_disallowed_type_fails_at_verification(uploads, storage_root, written):
    upload_id = _start(uploads, HTML_PAGE, originalName="page.png")["uploadId"]
    uploads.uploadPart(upload_id, 0, base64.b64encode(HTML_PAGE).decode())
    with pytest.raises(UnsupportedMediaType, match="text/html"):
        uploads.completeUpload(upload_id)
    assert uploads.getUploadProgress(upload_id)["status"] == "FAILED"
    assert _staged_files(storage_root) == []
    assert written.counts()["media"] == 0


def test_cancel_discards_the_parts_and_says_so(uploads, storage_root, dispatched):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    _part(uploads, upload_id, data, 1)
    assert _staged_files(storage_root)
    cancelled = uploads.cancelUpload(upload_id)
    assert cancelled["status"] == "CANCELLED"
    assert _staged_files(storage_root) == []
    assert uploads.cancelUpload(upload_id)["status"] == "CANCELLED"  # twice is fine
    with pytest.raises(Conflict, match="CANCELLED"):
        _part(uploads, upload_id, data, 2)
    with pytest.raises(Conflict, match="CANCELLED"):
        uploads.completeUpload(upload_id)
    assert dispatched.types() == ["upload_cancelled"]
    assert dispatched[0][1]["upload"]["uploadId"] == upload_id


def test_idle_sessions_expire_and_their_parts_go(uploads, sessions, storage_root, settings):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    _part(uploads, upload_id, data, 1)
    fresh = _start(uploads, data)["uploadId"]
    with sessions.begin() as session:
        session.execute(
            update(UploadSession)
            .where(UploadSession.id == upload_id)
            .values(updated_at=utcnow() - settings.upload_idle - timedelta(minutes=1))
        )
    uploads.expire_uploads()
    assert uploads.getUploadProgress(upload_id)["status"] == "EXPIRED"
    assert uploads.getUploadProgress(fresh)["status"] == "PENDING"
    # Only the fresh session's (empty) staging area is left; the expired one's part is gone.
    assert [p.name for p in _staged_files(storage_root) if p.name.startswith("part-")] == []
    assert len(list(storage_root.glob(".tmp-upload-*"))) == 1
    with pytest.raises(Conflict, match="EXPIRED"):
        _part(uploads, upload_id, data, 2)


def test_only_the_uploader_sees_a_session(uploads):
    upload_id = _start(uploads, noisy_png_bytes(1500))["uploadId"]
    act_as(uploads, "u-2")
    for call in (
        lambda: uploads.getUploadProgress(upload_id),
        lambda: uploads.cancelUpload(upload_id),
        lambda: uploads.completeUpload(upload_id),
        lambda: uploads.uploadPart(upload_id, 0, "AAAA"),
    ):
        with pytest.raises(NotFound):
            call()
    act_as(uploads, "mod", "admin")
    assert uploads.getUploadProgress(upload_id)["status"] == "PENDING"


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ({"size": 0}, ValidationError, "size"),
        ({"size": "10"}, ValidationError, "size"),
        ({"checksum": "md5:abc"}, ValidationError, "checksum"),
        ({"content": "AAAA"}, ValidationError, "content"),
        ({"size": 10**12}, PayloadTooLarge, None),
        ({"size": 30 * 1024 * 1024, "mimeType": "image/png"}, PayloadTooLarge, None),
    ],
)
def test_bad_initiation(uploads, written, change, error, field):
    with pytest.raises(error) as caught:
        _start(uploads, b"x", **change)
    if field:
        assert field in caught.value.fields
    assert written.counts()["media"] == 0


def test_a_completion_that_died_half_way_is_finished_by_a_retry(uploads, monkeypatch, storage):
    """Killed after assembling the file and before the commit: the retry reuses the bytes."""

    data = noisy_png_bytes(2500)
    upload_id = _start(uploads, data)["uploadId"]
    for number in range(1, -(-len(data) // CHUNK) + 1):
        _part(uploads, upload_id, data, number)

    def die(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(uploads_module, "sniff", die)
    with pytest.raises(SystemExit):
        uploads.completeUpload(upload_id)
    monkeypatch.undo()
    assert uploads.getUploadProgress(upload_id)["status"] == "VERIFYING"
    media = uploads.completeUpload(upload_id)
    assert media["size"] == len(data)
    assert media["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()


# -- streams (the tus side) -----------------------------------------------------------------------


def _blocks(data, size=700):
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_stream_in_odd_pieces_becomes_parts_and_a_tail(uploads, sessions, storage_root):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    streams = uploads.uploads
    assert streams.append(upload_id, 0, _blocks(data[:1500]), 1500).end == 1500
    with sessions() as session:
        row = session.get(UploadSession, upload_id)
        assert (row.tail_size, row.status) == (1500 - CHUNK, "UPLOADING")
        tail_key = row.tail_key
    assert (storage_root / tail_key).read_bytes() == data[CHUNK:1500]
    assert uploads.getUploadProgress(upload_id)["bytesUploaded"] == 1500
    assert streams.append(upload_id, 1500, _blocks(data[1500:]), None).end == len(data)
    assert not (storage_root / tail_key).exists()  # the old tail went once its bytes moved on
    media = uploads.completeUpload(upload_id)
    assert media["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_stream_at_the_wrong_offset_changes_nothing(uploads):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    streams = uploads.uploads
    streams.append(upload_id, 0, [data[:100]], 100)
    with pytest.raises(OffsetMismatch) as caught:
        streams.append(upload_id, 0, [data[:100]], 100)
    assert caught.value.expected == 100
    assert uploads.getUploadProgress(upload_id)["bytesUploaded"] == 100


def test_an_interrupted_stream_keeps_what_arrived(uploads):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]

    def dropped():
        yield data[:1300]
        raise StreamInterrupted("the connection closed")

    with pytest.raises(StreamInterrupted):
        uploads.uploads.append(upload_id, 0, dropped(), 2000)
    assert uploads.getUploadProgress(upload_id)["bytesUploaded"] == 1300


def test_a_checksummed_stream_keeps_nothing_unless_it_matches(uploads):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    streams = uploads.uploads
    piece = data[:1500]
    with pytest.raises(ChecksumMismatch):
        streams.append(upload_id, 0, _blocks(piece), None, ("sha256", b"\x00" * 32))
    assert uploads.getUploadProgress(upload_id)["bytesUploaded"] == 0

    def dropped():
        yield piece
        raise StreamInterrupted("the connection closed")

    with pytest.raises(StreamInterrupted):
        streams.append(upload_id, 0, dropped(), 3000, ("sha256", b"\x00" * 32))
    assert uploads.getUploadProgress(upload_id)["bytesUploaded"] == 0
    checksum = ("sha256", hashlib.sha256(piece).digest())
    assert streams.append(upload_id, 0, _blocks(piece), None, checksum).end == 1500


def test_two_streams_racing_on_one_session_cannot_both_win(uploads):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    streams = uploads.uploads

    def racing():
        yield data[:600]
        # Another request for the same offset finishes while this one is still streaming.
        streams.append(upload_id, 0, [data[: CHUNK + 10]], CHUNK + 10)
        yield data[600 : CHUNK + 200]

    with pytest.raises(Conflict, match="another request"):
        streams.append(upload_id, 0, racing(), None)
    assert uploads.getUploadProgress(upload_id)["bytesUploaded"] == CHUNK + 10


def test_a_stream_past_the_declared_size_fails_the_upload(uploads, storage_root):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    with pytest.raises(PayloadTooLarge, match="declared"):
        uploads.uploads.append(upload_id, 0, _blocks(data + b"more" * 1000), None)
    progress = uploads.getUploadProgress(upload_id)
    assert progress["status"] == "FAILED" and "declared" in progress["failureReason"]
    assert [p for p in _staged_files(storage_root) if not p.name.startswith(".")] == []


def test_rpc_parts_wait_while_a_stream_holds_a_tail(uploads):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    uploads.uploads.append(upload_id, 0, [data[:100]], 100)
    with pytest.raises(Conflict, match="tus"):
        _part(uploads, upload_id, data, 2)


def test_the_sweeper_keeps_the_tail_of_a_paused_upload(uploads, sessions, storage_root):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    uploads.uploads.append(upload_id, 0, [data[:100]], 100)
    catalog = uploads.catalog
    catalog.settings = replace(catalog.settings, orphan_grace=timedelta(0))
    assert Hygiene(catalog).sweep_orphans() == 0
    assert uploads.uploads.append(upload_id, 100, [data[100:]], None).end == len(data)
    assert uploads.completeUpload(upload_id)["size"] == len(data)


def test_direct_uploads_need_a_bucket(uploads):
    with pytest.raises(ValidationError) as caught:
        _start(uploads, b"x" * 100, direct=True)
    assert "direct" in caught.value.fields


def test_a_quota_counts_media_and_uploads_under_way(uploads, service):
    data = noisy_png_bytes(3000)
    catalog = uploads.catalog
    catalog.settings = replace(catalog.settings, user_quota_bytes=len(data) * 2 + 10)
    _start(uploads, data)
    _start(uploads, data)
    with pytest.raises(QuotaExceeded, match="quota"):
        _start(uploads, data)
    act_as(uploads, "u-2")
    _start(uploads, data, userId="u-2")  # a quota is per user


def test_an_idle_stream_expires_with_its_tail(uploads, sessions, storage_root, settings):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    uploads.uploads.append(upload_id, 0, [data[: CHUNK + 100]], CHUNK + 100)
    with sessions() as session:
        tail_key = session.get(UploadSession, upload_id).tail_key
    assert (storage_root / tail_key).exists()
    with sessions.begin() as session:
        session.execute(
            update(UploadSession).values(
                updated_at=utcnow() - settings.upload_idle - timedelta(minutes=1)
            )
        )
    uploads.expire_uploads()
    assert uploads.getUploadProgress(upload_id)["status"] == "EXPIRED"
    assert not (storage_root / tail_key).exists()
    assert [p for p in _staged_files(storage_root) if not p.name.startswith(".")] == []


def test_parts_that_changed_in_storage_are_a_conflict_not_a_crash(uploads, storage_root):
    data = noisy_png_bytes(2500)
    upload_id = _start(uploads, data)["uploadId"]
    for number in range(1, -(-len(data) // CHUNK) + 1):
        _part(uploads, upload_id, data, number)
    (part,) = storage_root.glob(".tmp-upload-*/part-00001")
    part.write_bytes(b"\x00" * 32 + part.read_bytes()[32:])  # an etag no put ever wrote
    with pytest.raises(Conflict, match="do not match"):
        uploads.completeUpload(upload_id)
    assert uploads.getUploadProgress(upload_id)["status"] == "FAILED"
    assert not list(storage_root.glob(".tmp-upload-*"))  # its parts are gone


def test_a_whole_file_in_one_request_is_hashed_on_its_way(uploads):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    appended = uploads.uploads.append(upload_id, 0, _blocks(data), None)
    assert appended.end == len(data)
    assert appended.streamed.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    parts = -(-len(data) // CHUNK)
    assert [number for number, _ in appended.streamed.parts] == list(range(1, parts + 1))
    media = uploads.uploads.complete(INTERNAL, upload_id, appended.streamed)
    assert media.checksum == appended.streamed.checksum


def test_a_file_sent_in_several_requests_has_no_streamed_hash(uploads):
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    assert uploads.uploads.append(upload_id, 0, [data[:1500]], 1500).streamed is None
    assert uploads.uploads.append(upload_id, 1500, [data[1500:]], None).streamed is None


def test_a_part_replaced_after_the_stream_is_hashed_from_storage(uploads):
    """The streamed hash covers the bytes that request sent; once another part stands in
    storage, completion must hash what is stored."""
    data = noisy_png_bytes(3000)
    upload_id = _start(uploads, data)["uploadId"]
    appended = uploads.uploads.append(upload_id, 0, _blocks(data), None)
    second = data[CHUNK : 2 * CHUNK]
    replaced = data[:CHUNK] + bytes(255 - b for b in second) + data[2 * CHUNK :]
    _part(uploads, upload_id, replaced, 2)  # part 2 again, with other bytes
    media = uploads.uploads.complete(INTERNAL, upload_id, appended.streamed)
    assert media.checksum == "sha256:" + hashlib.sha256(replaced).hexdigest()


def test_a_part_failing_to_store_mid_stream_fails_the_request_not_the_upload(uploads, monkeypatch):
    data = noisy_png_bytes(5000)
    upload_id = _start(uploads, data)["uploadId"]
    storage = uploads.catalog.storage
    put_part = storage.put_part

    def fails_on_part_3(key, storage_upload_id, number, part):
        if number == 3:
            raise StorageUnavailable("disk went away")
        return put_part(key, storage_upload_id, number, part)

    monkeypatch.setattr(storage, "put_part", fails_on_part_3)
    with pytest.raises(StorageUnavailable, match="disk went away"):
        uploads.uploads.append(upload_id, 0, _blocks(data), None)
    progress = uploads.getUploadProgress(upload_id)
    assert progress["status"] in ("PENDING", "UPLOADING")
    resume_at = progress["bytesUploaded"]
    assert resume_at % CHUNK == 0 and resume_at <= 2 * CHUNK
    monkeypatch.undo()
    uploads.uploads.append(upload_id, resume_at, _blocks(data[resume_at:]), None)
    media = uploads.completeUpload(upload_id)
    assert media["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()


def test_stored_parts_are_recorded_while_the_request_goes_on(uploads, monkeypatch):
    monkeypatch.setattr(streams, "RECORD_INTERVAL", 0)
    data = noisy_png_bytes(5000)
    upload_id = _start(uploads, data)["uploadId"]
    seen = []

    def body():
        for block in _blocks(data, CHUNK):
            seen.append(uploads.getUploadProgress(upload_id)["bytesUploaded"])
            yield block

    uploads.uploads.append(upload_id, 0, body(), None)
    # Part n is stored while part n + 1 arrives, and recorded once part n + 1 is full.
    assert seen == [max(0, n - 1) * CHUNK for n in range(len(seen))]
    assert len(seen) >= 5


# -- a repeated initiateUpload ------------------------------------------------------------------


def _staging_dirs(storage_root):
    return [p for p in storage_root.iterdir() if p.is_dir() and p.name.startswith(UPLOAD_PREFIX)]


def test_the_same_idempotency_key_returns_the_same_session(uploads, sessions, storage_root):
    data = noisy_png_bytes(3000)
    first = _start(uploads, data, idempotencyKey="lecture-7")
    _part(uploads, first["uploadId"], data, 1)
    again = _start(uploads, data, idempotencyKey="lecture-7")
    assert again["uploadId"] == first["uploadId"]
    assert again["bytesUploaded"] == CHUNK  # the session as it is now
    with sessions() as session:
        assert session.query(UploadSession).count() == 1
    assert len(_staging_dirs(storage_root)) == 1
    with pytest.raises(Conflict, match="idempotencyKey 'lecture-7' was already used"):
        _start(uploads, data + b"more", idempotencyKey="lecture-7")
    act_as(uploads, "u-2")
    other = _start(uploads, data, userId="u-2", idempotencyKey="lecture-7")
    assert other["uploadId"] != first["uploadId"]  # keys are per user


def test_a_redelivered_initiate_returns_the_first_session(uploads, sessions):
    data = noisy_png_bytes(3000)
    catalog = uploads.catalog
    # At the quota with this upload: a second session would be refused, a replay is not.
    catalog.settings = replace(catalog.settings, user_quota_bytes=len(data))
    uploads.delivery_id = "correlation-1"
    first = _start(uploads, data)
    again = _start(uploads, data)
    assert again["uploadId"] == first["uploadId"]
    uploads.delivery_id = "correlation-2"
    with pytest.raises(QuotaExceeded):
        _start(uploads, data)


def test_racing_deliveries_of_one_initiate_make_one_session(
    uploads, sessions, storage_root, monkeypatch
):
    """Both looked before either committed: the loser's insert fails on the unique request,
    it answers with the winner's session and removes what it staged."""
    data = noisy_png_bytes(3000)
    uploads.delivery_id = "correlation-1"
    first = _start(uploads, data)
    looked = []
    started_by = uploads_module.Uploads._started_by

    def not_yet_committed(self, request):
        looked.append(request)
        return None if len(looked) == 1 else started_by(self, request)

    monkeypatch.setattr(uploads_module.Uploads, "_started_by", not_yet_committed)
    again = _start(uploads, data)
    assert again["uploadId"] == first["uploadId"] and len(looked) == 2
    with sessions() as session:
        assert session.query(UploadSession).count() == 1
    assert len(_staging_dirs(storage_root)) == 1
