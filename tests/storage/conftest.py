"""Backends under test: every shared test runs against each name in BACKENDS.

``nameko test`` applies eventlet's monkey patch before pytest imports this module, so boto3 may
be imported here.

Adding a backend to the shared suite takes a ``<name>_backend`` fixture (a fresh, empty
store) and a ``<name>_raw_contents`` fixture (everything physically kept, temporary data
included), plus its name in BACKENDS.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from storage import LocalStorage, Storage
from storage.s3 import S3Storage
from tests.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer

BACKENDS = ["local", "s3"]
# S3's smallest part (all but the last): multipart is exercised with ~11 MiB objects.
S3_TEST_PART_SIZE = 5 * 1024 * 1024

RawContents = Callable[[], list[str]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Storage:
    """A fresh, empty store of each backend."""
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture
def raw_contents(request: pytest.FixtureRequest, backend: Storage) -> RawContents:
    """Lists what the backend physically holds, beyond what iter_objects admits to."""
    return request.getfixturevalue(f"{backend.name}_raw_contents")


# -- local ------------------------------------------------------------------------------------


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def local_backend(local_root: Path) -> LocalStorage:
    return LocalStorage(local_root)


@pytest.fixture
def local_raw_contents(local_root: Path) -> RawContents:
    """Every file under the root, temp files included."""

    def contents() -> list[str]:
        return sorted(
            p.relative_to(local_root).as_posix() for p in local_root.rglob("*") if not p.is_dir()
        )

    return contents


# -- s3 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session. Tests that stop an endpoint start their own."""
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


def s3_client(endpoint_url: str) -> Any:
    """A plain boto3 client, for setting up and inspecting what S3Storage did."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


@pytest.fixture(scope="session")
def s3_admin(moto_server: MotoServer) -> Iterator[Any]:
    client = s3_client(moto_server.endpoint_url)
    yield client
    client.close()


def empty_and_delete_bucket(client: Any, bucket: str) -> None:
    """Best effort: moto keeps everything in memory, so free what a test stored."""
    with contextlib.suppress(Exception):
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", ()):
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(s3_admin: Any) -> Iterator[str]:
    """A new, empty bucket of its own for each test."""
    name = f"test-{uuid.uuid4().hex}"
    s3_admin.create_bucket(Bucket=name)
    yield name
    empty_and_delete_bucket(s3_admin, name)


def make_s3_storage(bucket: str, endpoint_url: str, **options: Any) -> S3Storage:
    """An S3Storage with moto's test credentials."""
    return S3Storage(
        bucket,
        endpoint_url=endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        **options,
    )


@pytest.fixture
def s3_backend(s3_bucket: str, moto_server: MotoServer) -> Iterator[S3Storage]:
    store = make_s3_storage(s3_bucket, moto_server.endpoint_url, part_size=S3_TEST_PART_SIZE)
    yield store
    store.close()


@pytest.fixture
def s3_raw_contents(s3_admin: Any, s3_bucket: str) -> RawContents:
    """Every object key, plus ``upload:<key>`` for each incomplete multipart upload."""

    def contents() -> list[str]:
        keys = [
            item["Key"]
            for page in s3_admin.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for item in page.get("Contents", ())
        ]
        uploads = s3_admin.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
        return sorted(keys + [f"upload:{upload['Key']}" for upload in uploads])

    return contents
