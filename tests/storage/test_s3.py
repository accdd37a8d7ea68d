"""What only S3Storage has: presigned URLs, multipart details, abandoned uploads, and the
translation of every botocore error. The shared contract is in test_backends.py."""

from __future__ import annotations

import gc
import hashlib
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.stub import Stubber
from urllib3.exceptions import ProtocolError

import storage.s3
from storage import (
    DirectUploads,
    InvalidKey,
    ObjectNotFound,
    PresignedReads,
    StorageUnavailable,
    build_storage,
)
from storage.s3 import S3Storage
from tests.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer, free_port
from tests.storage.conftest import S3_TEST_PART_SIZE, make_s3_storage, s3_client

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def uploads_of(client: Any, bucket: str) -> list[dict[str, Any]]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


# -- construction -------------------------------------------------------------------------------


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="bucket"):
        S3Storage("")
    with pytest.raises(ValueError, match="part_size"):
        S3Storage("b", part_size=5 * MiB - 1)
    with pytest.raises(ValueError, match="both"):
        S3Storage("b", access_key_id="only-the-id")


def test_repr_shows_no_secrets() -> None:
    store = S3Storage(
        "bkt",
        endpoint_url="http://127.0.0.1:1",
        region=REGION,
        access_key_id="AKIDEXAMPLE",
        secret_access_key="very-secret",
    )
    try:
        assert "very-secret" not in repr(store)
        assert "AKIDEXAMPLE" not in repr(store)
        assert "bkt" in repr(store)
    finally:
        store.close()


# -- writing ------------------------------------------------------------------------------------


def test_single_put_keeps_type_and_sha256_metadata(
    s3_backend: S3Storage, s3_admin: Any, s3_bucket: str
) -> None:
    data = b"x" * S3_TEST_PART_SIZE  # exactly one part: still a single PutObject
    stored = s3_backend.put("one", [data[:100], data[100:]], "image/png")

    response = s3_admin.head_object(Bucket=s3_bucket, Key="one")
    assert "-" not in response["ETag"]  # a multipart ETag is "<md5 of md5s>-<parts>"
    assert response["ContentType"] == "image/png"
    assert response["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert stored.checksum == "sha256:" + response["Metadata"]["sha256"]


def test_large_put_is_a_multipart_upload_of_part_size_parts(
    s3_backend: S3Storage, s3_admin: Any, s3_bucket: str
) -> None:
    data = b"y" * (2 * S3_TEST_PART_SIZE + 1)
    s3_backend.put("big", (data[i : i + 4096] for i in range(0, len(data), 4096)), "video/mp4")

    assert s3_admin.head_object(Bucket=s3_bucket, Key="big")["ETag"].strip('"').endswith("-3")
    part = s3_admin.head_object(Bucket=s3_bucket, Key="big", PartNumber=1)
    assert part["ContentLength"] == S3_TEST_PART_SIZE
    info = s3_backend.head("big")
    assert (info.size, info.content_type) == (len(data), "video/mp4")
    assert uploads_of(s3_admin, s3_bucket) == []


def test_put_never_buffers_more_than_a_part(
    s3_backend: S3Storage, s3_admin: Any, s3_bucket: str
) -> None:
    # The producer sees how many bytes went out: S3Storage may be at most one part ahead.
    sent: list[int] = []
    real_upload_part = s3_backend._client.upload_part

    def upload_part(**kwargs: Any) -> Any:
        sent.append(len(kwargs["Body"]))
        return real_upload_part(**kwargs)

    s3_backend._client.upload_part = upload_part
    consumed = 0
    lead: list[int] = []

    def produce() -> Iterator[bytes]:
        nonlocal consumed
        for _ in range(3 * S3_TEST_PART_SIZE // 65536 + 3):
            lead.append(consumed - sum(sent))
            consumed += 65536
            yield b"z" * 65536

    s3_backend.put("paced", produce(), "application/octet-stream")

    assert sent == [S3_TEST_PART_SIZE] * 3 + [3 * 65536]
    assert max(lead) <= S3_TEST_PART_SIZE


def test_producer_failure_aborts_the_multipart_upload(
    s3_backend: S3Storage, s3_admin: Any, s3_bucket: str
) -> None:
    def produce() -> Iterator[bytes]:
        yield b"a" * (S3_TEST_PART_SIZE + 1)
        yield b"b"  # the first part has been sent once this is asked for
        assert len(uploads_of(s3_admin, s3_bucket)) == 1
        raise KeyboardInterrupt  # not an Exception: must abort all the same

    with pytest.raises(KeyboardInterrupt):
        s3_backend.put("k", produce(), "text/plain")

    assert uploads_of(s3_admin, s3_bucket) == []
    assert not s3_backend.exists("k")


# -- reading ------------------------------------------------------------------------------------


class SpyBody:
    """Wraps a response body and records whether it was closed."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self.closed = False

    def read(self, amount: int | None = None) -> bytes:
        return self._body.read(amount)

    def close(self) -> None:
        self.closed = True
        self._body.close()


def spy_on_bodies(store: S3Storage) -> list[SpyBody]:
    bodies: list[SpyBody] = []
    real_get_object = store._client.get_object

    def get_object(**kwargs: Any) -> Any:
        response = real_get_object(**kwargs)
        response["Body"] = SpyBody(response["Body"])
        bodies.append(response["Body"])
        return response

    store._client.get_object = get_object
    return bodies


def test_response_bodies_are_always_closed(s3_backend: S3Storage) -> None:
    s3_backend.put("r", [b"0123456789"], "text/plain")
    bodies = spy_on_bodies(s3_backend)

    assert b"".join(s3_backend.iter_chunks("r", chunk_size=3)) == b"0123456789"
    chunks = s3_backend.iter_chunks("r", chunk_size=3)
    assert next(chunks) == b"012"
    chunks.close()  # type: ignore[attr-defined]
    s3_backend.iter_chunks("r")  # dropped unread
    gc.collect()

    assert len(bodies) == 3
    assert [body.closed for body in bodies] == [True, True, True]


def test_range_requests_ask_only_for_the_range(s3_backend: S3Storage) -> None:
    s3_backend.put("r", [b"0123456789"], "text/plain")
    ranges: list[str | None] = []
    real_get_object = s3_backend._client.get_object

    def get_object(**kwargs: Any) -> Any:
        ranges.append(kwargs.get("Range"))
        return real_get_object(**kwargs)

    s3_backend._client.get_object = get_object
    for start, end in [(0, None), (2, None), (0, 4), (2, 5), (8, 100), (20, None)]:
        list(s3_backend.iter_chunks("r", start, end))

    assert ranges == [None, "bytes=2-", "bytes=0-3", "bytes=2-4", "bytes=8-99", "bytes=20-"]


# -- listing ------------------------------------------------------------------------------------


def test_iter_objects_follows_every_page(
    s3_backend: S3Storage, s3_admin: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.s3, "LIST_PAGE_SIZE", 3)
    keys = {f"media/2024/01/01/{i:02d}" for i in range(10)}
    for key in keys:
        s3_backend.put(key, [b"x"], "text/plain")
    # Put there by other means: no storage call could address it, so it is not listed.
    s3_admin.put_object(Bucket=s3_bucket, Key="media/has space", Body=b"x")

    assert {info.key for info in s3_backend.iter_objects()} == keys
    assert {info.key for info in s3_backend.iter_objects("media/2024/")} == keys


# -- presigned URLs -----------------------------------------------------------------------------


def test_presigned_url_serves_the_bytes_with_the_type_and_disposition_asked_for(
    s3_backend: S3Storage,
) -> None:
    data = b"\x89PNG not really"
    s3_backend.put("media/p.png", [data], "application/octet-stream")
    disposition = "attachment; filename=\"a b.png\"; filename*=UTF-8''a%20b.png"

    url = s3_backend.presigned_get_url(
        "media/p.png", 300, content_type="image/png", disposition=disposition
    )

    assert url is not None
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    with requests.get(url, timeout=10) as response:
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["Content-Disposition"] == disposition


def test_presigned_url_limits(s3_backend: S3Storage) -> None:
    kwargs = {"content_type": "text/plain", "disposition": "inline"}
    assert s3_backend.presigned_get_url("k", 7 * 24 * 3600, **kwargs) is not None
    # Over SigV4's limit: the caller falls back to the service's own signed URL.
    assert s3_backend.presigned_get_url("k", 7 * 24 * 3600 + 1, **kwargs) is None
    with pytest.raises(ValueError):
        s3_backend.presigned_get_url("k", 0, **kwargs)
    with pytest.raises(InvalidKey):
        s3_backend.presigned_get_url("../k", 60, **kwargs)


# -- abandoned multipart uploads ----------------------------------------------------------------


def leave_an_upload(client: Any, bucket: str, key: str) -> str:
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"p")
    return str(upload_id)


def test_abort_incomplete_uploads_removes_a_left_upload(
    s3_backend: S3Storage, s3_admin: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.s3, "LIST_PAGE_SIZE", 2)  # and follows every page
    for i in range(5):
        leave_an_upload(s3_admin, s3_bucket, f"crashed/{i}")
    s3_backend.put("kept", [b"x"], "text/plain")

    # moto dates every upload 2010-11-10, so each one is older than an hour.
    assert s3_backend.abort_incomplete_uploads(timedelta(hours=1)) == 5

    assert uploads_of(s3_admin, s3_bucket) == []
    assert s3_backend.abort_incomplete_uploads(timedelta(hours=1)) == 0
    assert s3_backend.exists("kept")
    with pytest.raises(ValueError):
        s3_backend.abort_incomplete_uploads(timedelta(seconds=-1))


def test_abort_incomplete_uploads_keeps_recent_ones() -> None:
    # moto cannot date an upload: a stubbed client shows which ones are aborted.
    client = s3_client("http://127.0.0.1:1")
    now = datetime.now(UTC)
    with Stubber(client) as stub:
        stub.add_response(
            "list_multipart_uploads",
            {
                "Uploads": [
                    {"Key": "old", "UploadId": "u1", "Initiated": now - timedelta(hours=2)},
                    {"Key": "new", "UploadId": "u2", "Initiated": now - timedelta(minutes=1)},
                    {"Key": "gone", "UploadId": "u3", "Initiated": now - timedelta(days=3)},
                ]
            },
        )
        stub.add_response(
            "abort_multipart_upload", {}, {"Bucket": "bkt", "Key": "old", "UploadId": "u1"}
        )
        # Finished or aborted by someone else since the listing: not counted, not an error.
        stub.add_client_error("abort_multipart_upload", "NoSuchUpload", http_status_code=404)
        aborted = S3Storage("bkt", client=client).abort_incomplete_uploads(timedelta(hours=1))
        stub.assert_no_pending_responses()
    assert aborted == 1


# -- errors: server answers ---------------------------------------------------------------------


def test_a_missing_bucket_is_unavailable_not_missing_objects(moto_server: MotoServer) -> None:
    store = make_s3_storage(f"missing-{uuid.uuid4().hex}", moto_server.endpoint_url)
    try:
        for call in every_call(store):
            with pytest.raises(StorageUnavailable) as info:
                call()
            assert "NoSuchBucket" in str(info.value) or "404" in str(info.value)
    finally:
        store.close()


def every_call(store: S3Storage) -> list[Callable[[], object]]:
    """Every storage operation that talks to S3, each on its own."""
    return [
        lambda: store.put("k", [b"x"], "text/plain"),
        lambda: store.put("k", [b"x" * (S3_TEST_PART_SIZE + 1)], "text/plain"),
        lambda: store.head("k"),
        lambda: store.exists("k"),
        lambda: store.iter_chunks("k"),
        lambda: store.iter_chunks("k", 2, 5),
        lambda: store.iter_chunks("k", 3, 3),
        lambda: store.read_head("k", 10),
        lambda: store.delete("k"),
        lambda: store.iter_objects(),  # the first page is fetched by the call
        lambda: store.check(),
        lambda: store.abort_incomplete_uploads(timedelta(0)),
    ]


def stubbed_store() -> tuple[S3Storage, Stubber]:
    client = s3_client("http://127.0.0.1:1")
    return S3Storage("bkt", client=client), Stubber(client)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("403", 403),  # a HEAD answer has no body: only the status is known
        ("InvalidAccessKeyId", 403),
        ("SignatureDoesNotMatch", 403),
        ("SlowDown", 503),
        ("InternalError", 500),
    ],
)
def test_refusals_are_unavailable_and_name_the_code(code: str, status: int) -> None:
    store, stub = stubbed_store()
    with stub:
        for operation in ("head_object", "get_object", "put_object", "head_bucket"):
            stub.add_client_error(operation, code, http_status_code=status)
        for call in (
            lambda: store.head("k"),
            lambda: store.iter_chunks("k"),
            lambda: store.put("k", [b"x"], "text/plain"),
            store.check,
        ):
            with pytest.raises(StorageUnavailable, match=code):
                call()
        stub.assert_no_pending_responses()


def test_a_bare_404_on_head_is_a_missing_object_when_the_bucket_exists() -> None:
    store, stub = stubbed_store()
    with stub:
        stub.add_client_error("head_object", "404", http_status_code=404)
        stub.add_response("head_bucket", {})
        with pytest.raises(ObjectNotFound):
            store.head("k")
        stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
        with pytest.raises(ObjectNotFound):
            store.iter_chunks("k")
        stub.assert_no_pending_responses()


# -- errors: no answer --------------------------------------------------------------------------


class FailingClient:
    """A client each of whose calls raises ``error``, a botocore connection failure."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.real = s3_client("http://127.0.0.1:1")

    def get_paginator(self, name: str) -> Any:
        paginator = self.real.get_paginator(name)
        error = self.error

        class Failing:
            def paginate(self, **kwargs: Any) -> Iterator[Any]:
                paginator.paginate(**kwargs)  # parameters still validated
                raise error
                yield  # a generator, like botocore's page iterator

        return Failing()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(**kwargs: Any) -> Any:
            raise self.error

        return fail


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://s3.example"),
        ConnectTimeoutError(endpoint_url="http://s3.example"),
        ReadTimeoutError(endpoint_url="http://s3.example"),
        ConnectionClosedError(endpoint_url="http://s3.example"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_connection_failures_are_unavailable(error: Exception) -> None:
    store = S3Storage("bkt", client=FailingClient(error))
    for call in every_call(store):
        with pytest.raises(StorageUnavailable, match="S3 endpoint unreachable"):
            call()


def test_other_botocore_errors_are_unavailable() -> None:
    store = S3Storage("bkt", client=FailingClient(NoCredentialsError()))
    for call in every_call(store):
        with pytest.raises(StorageUnavailable, match="credentials"):
            call()


@pytest.mark.parametrize(
    "error",
    [ResponseStreamingError(error="reset by peer"), ProtocolError("Connection broken")],
    ids=lambda error: type(error).__name__,
)
def test_a_body_failing_mid_stream_is_unavailable(s3_backend: S3Storage, error: Exception) -> None:
    s3_backend.put("r", [b"0123456789"], "text/plain")
    bodies = spy_on_bodies(s3_backend)
    chunks = s3_backend.iter_chunks("r", chunk_size=4)
    assert next(chunks) == b"0123"

    def read(amount: int | None = None) -> bytes:
        raise error

    bodies[0].read = read  # type: ignore[method-assign]
    with pytest.raises(StorageUnavailable, match="S3 endpoint unreachable"):
        next(chunks)
    assert bodies[0].closed


def test_a_closed_port_is_unavailable_for_every_call() -> None:
    store = make_s3_storage("bkt", f"http://127.0.0.1:{free_port()}")
    try:
        for call in every_call(store):
            with pytest.raises(StorageUnavailable, match="S3 endpoint unreachable"):
                call()
        # Presigning needs no request: it works offline.
        url = store.presigned_get_url("k", 60, content_type="text/plain", disposition="inline")
        assert url is not None
    finally:
        store.close()


def test_endpoint_stopped_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    with MotoServer() as server:
        admin = s3_client(server.endpoint_url)
        admin.create_bucket(Bucket="bkt")
        store = make_s3_storage("bkt", server.endpoint_url, part_size=S3_TEST_PART_SIZE)
        try:
            store.put("before", [b"x"], "text/plain")

            def produce() -> Iterator[bytes]:
                yield b"a" * (S3_TEST_PART_SIZE + 1)
                yield b"b"  # part 1 has been sent
                server.stop()
                yield b"c" * S3_TEST_PART_SIZE

            with caplog.at_level(logging.WARNING, logger="storage.s3"):
                with pytest.raises(StorageUnavailable, match="S3 endpoint unreachable"):
                    store.put("during", produce(), "text/plain")
            # The abort could not reach the server either: logged, for the clean-up job.
            assert "could not abort multipart upload" in caplog.text
            for call in every_call(store):
                with pytest.raises(StorageUnavailable, match="S3 endpoint unreachable"):
                    call()

            server.start()  # same port, but empty: moto keeps nothing across a restart
            with pytest.raises(StorageUnavailable):
                store.check()
            admin.create_bucket(Bucket="bkt")
            store.check()
            store.put("after", [b"y"], "text/plain")
            assert b"".join(store.iter_chunks("after")) == b"y"

            server.reset()
            with pytest.raises(StorageUnavailable):
                store.check()
        finally:
            store.close()
            admin.close()
    assert not server.running


# -- factory ------------------------------------------------------------------------------------


def test_build_storage_s3(moto_server: MotoServer, s3_bucket: str) -> None:
    store = build_storage(
        {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": s3_bucket,
            "S3_ENDPOINT_URL": moto_server.endpoint_url,
            "S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "STORAGE_ROOT": "./unused",
        }
    )
    assert isinstance(store, S3Storage)
    assert isinstance(store, DirectUploads) and isinstance(store, PresignedReads)
    try:
        assert store.name == "s3"
        assert store.bucket == s3_bucket
        assert store.part_size == 8 * MiB
        store.check()
        store.put("k", [b"via settings"], "text/plain")
        assert b"".join(store.iter_chunks("k")) == b"via settings"
    finally:
        store.close()


def test_build_storage_s3_treats_empty_settings_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # As config.yml gives them when the variables are unset; boto3's own chain applies.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    store = build_storage(
        {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": "bkt",
            "S3_ENDPOINT_URL": "",
            "S3_REGION": "",
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
        }
    )
    assert isinstance(store, S3Storage)
    try:
        assert store.endpoint_url is None
        client = store._client
        assert client.meta.region_name == "eu-west-3"
        assert client._request_signer._credentials.access_key == "from-env"
        # AWS itself: virtual-hosted addressing, not the path style of custom endpoints.
        url = store.presigned_get_url("k", 60, content_type="text/plain", disposition="inline")
        assert url is not None and url.startswith("https://bkt.s3.")
    finally:
        store.close()


@pytest.mark.parametrize("bucket", [None, ""])
def test_build_storage_s3_requires_a_bucket(bucket: str | None) -> None:
    settings = {"STORAGE_BACKEND": "s3"}
    if bucket is not None:
        settings["S3_BUCKET"] = bucket
    with pytest.raises(ValueError, match="S3_BUCKET must be set"):
        build_storage(settings)


def test_importing_storage_does_not_import_boto3() -> None:
    # boto3 imported before eventlet's monkey patch breaks SSL: `import storage` must not do it.
    code = "import sys, storage; assert 'boto3' not in sys.modules, 'boto3 imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
