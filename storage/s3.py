"""A storage backend on any S3-compatible object store (AWS S3, MinIO, R2, Ceph, GCS interop).

Only the common S3 API is used: PutObject, multipart uploads (and ListParts, on an error path),
GetObject with ``Range`` or ``If-Match``, HeadObject, DeleteObject, ListObjectsV2,
ListMultipartUploads, HeadBucket and presigned GETs.

Under eventlet, boto3 must be imported after the monkey patch (``nameko run``/``nameko test``
patch first); ``storage/__init__.py`` therefore imports this module only when it is asked for
the ``s3`` backend. Managed transfers (``upload_fileobj`` and friends) are not used: their
worker threads can hang under green threads.

Longer than most modules (about 700 lines) on purpose: the registry gives each backend one
module, and every botocore error of every call is translated here, next to the call.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from urllib3.exceptions import HTTPError as URLLib3HTTPError

from storage.base import (
    DEFAULT_CHUNK_SIZE,
    MAX_PART_NUMBER,
    MIN_PART_SIZE,
    ObjectInfo,
    PartInfo,
    Storage,
    StoredObject,
    check_part_number,
    check_parts,
    check_range,
)
from storage.errors import ObjectNotFound, StorageUnavailable
from storage.keys import is_valid_key, validate_key

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# S3's limits on multipart uploads: every part but the last is 5 MiB (MIN_PART_SIZE) to 5 GiB,
# at most 10,000 (MAX_PART_NUMBER) parts.
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = MAX_PART_NUMBER
# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
# Keys per ListObjectsV2 / uploads per ListMultipartUploads request (S3's own maximum); a module
# constant so tests can make pagination visible with a handful of objects.
LIST_PAGE_SIZE = 1000

# Error codes of CompleteMultipartUpload meaning the part list is wrong, not the store.
_BAD_PART_LIST = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})

# Error codes meaning "no such object". HeadObject has no response body, so botocore can only
# report the HTTP status ("404"); some S3-compatible servers say "NotFound".
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Storage(Storage):
    """Objects in one bucket, under their keys as they are (no prefix is added)."""

    name = "s3"
    # boto3 talks over sockets that eventlet makes green: waiting costs the event loop nothing.
    blocking_io = False

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = 8 * MiB,
        client: Any | None = None,
    ) -> None:
        """Without credentials, boto3's default chain is used (environment, profile, IAM role).

        ``client`` replaces the boto3 client built here (tests, custom sessions).
        """
        if not bucket:
            raise ValueError("bucket must be a non-empty bucket name")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(
                f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes "
                f"(S3's multipart limits), got {part_size}"
            )
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        if client is None:
            client = _make_client(bucket, endpoint_url, region, access_key_id, secret_access_key)
        self._client = client

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> S3Storage:
        """``S3_BUCKET``, and optionally ``S3_ENDPOINT_URL``, ``S3_REGION``,
        ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``."""
        bucket = settings.get("S3_BUCKET")
        if not bucket:
            raise ValueError("S3_BUCKET must be set for the 's3' storage backend")
        # Empty strings (unset ${VAR:} in config.yml) mean "not set": boto3's defaults apply.
        return cls(
            bucket=bucket,
            endpoint_url=settings.get("S3_ENDPOINT_URL") or None,
            region=settings.get("S3_REGION") or None,
            access_key_id=settings.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    def close(self) -> None:
        """Close the client's pooled connections (the storage must not be used afterwards)."""
        self._client.close()

    # -- writing --------------------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        """One PutObject if the data fits in one part, else a multipart upload.

        At most one part (plus the chunk being copied) is held in memory. A single PutObject
        carries the sha256 as user metadata (``x-amz-meta-sha256``); a multipart upload cannot,
        because its metadata is fixed when the upload starts, before the bytes are seen: the
        caller records the returned checksum. Any failure, the producer's
        included, aborts the multipart upload, so nothing is left behind; either way readers
        see the previous object or the new one, never a part.
        """
        validate_key(key)
        hasher = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload: _MultipartUpload | None = None
        try:
            for chunk in chunks:  # errors of the producer propagate untranslated
                hasher.update(chunk)  # also rejects non-bytes (str) with TypeError
                view = memoryview(chunk).cast("B")
                size += len(view)
                offset = 0
                while offset < len(view):
                    if len(buffer) == self.part_size:
                        # Only now is it known that more data follows, so this part is not the
                        # last one: an object of exactly part_size stays a single PutObject.
                        if upload is None:
                            upload = self._start_upload(key, content_type)
                        upload.send(buffer)
                        buffer = bytearray()  # a new one: the sent part is freed, not copied
                    take = min(len(view) - offset, self.part_size - len(buffer))
                    buffer += view[offset : offset + take]
                    offset += take
            if upload is None:
                with _translated("PUT", self.bucket, key):
                    self._client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=buffer,
                        ContentType=content_type,
                        Metadata={"sha256": hasher.hexdigest()},
                    )
            else:
                upload.send(buffer)  # the last part: 1..part_size bytes
                upload.complete()
        except BaseException:
            # BaseException too: eventlet stops a killed greenthread with GreenletExit, and an
            # upload left open is billed storage until a lifecycle rule or a sweep removes it.
            if upload is not None:
                upload.abort()
            raise
        return StoredObject(key=key, size=size, checksum=f"sha256:{hasher.hexdigest()}")

    def _start_upload(self, key: str, content_type: str) -> _MultipartUpload:
        with _translated("CreateMultipartUpload", self.bucket, key):
            response = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type
            )
        return _MultipartUpload(self._client, self.bucket, key, response["UploadId"])

    def delete(self, key: str) -> bool:
        """HEAD first (S3's DeleteObject succeeds whether or not the key existed), then delete."""
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        with _translated("DELETE", self.bucket, key):
            self._client.delete_object(Bucket=self.bucket, Key=key)
        return True

    # -- staged uploads -------------------------------------------------------------------------

    def begin_parts(self, key: str, content_type: str, part_size: int | None = None) -> str:
        """CreateMultipartUpload; the upload id is S3's. S3 places the parts itself."""
        validate_key(key)
        with _translated("CreateMultipartUpload", self.bucket, key):
            response = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type
            )
        return str(response["UploadId"])

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> PartInfo:
        """UploadPart; the etag is the ETag S3 returned, as it returned it (quotes included)."""
        validate_key(key)
        check_part_number(number)
        size = memoryview(data).nbytes  # also rejects what is not bytes-like (str)
        _check_upload_id(key, upload_id)
        if isinstance(data, memoryview):
            data = data.tobytes()  # botocore sends bytes and bytearray, not memoryview
        with self._on_upload(f"UploadPart {number}", key, upload_id):
            response = self._client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        return PartInfo(number=number, size=size, etag=str(response["ETag"]))

    def complete_parts(
        self, key: str, upload_id: str, parts: list[PartInfo], checksum: str | None = None
    ) -> StoredObject:
        """CompleteMultipartUpload with the parts' ETags, then, unless the caller gave the
        ``checksum``, one GetObject read to the end.

        Cost without it: the whole object is downloaded once more. S3 cannot hash across parts
        (a multipart ETag is an MD5 of the parts' MD5s) and the parts may have been put in any
        order or by several processes, so the sha256 of the assembled object can only be
        computed from the object itself. The read asks for the ETag the completion returned
        (If-Match), so the checksum is that of the object written here even if the key is
        replaced meanwhile: then StorageUnavailable.
        """
        validate_key(key)
        ordered = check_parts(parts)
        _check_upload_id(key, upload_id)
        with self._on_upload("CompleteMultipartUpload", key, upload_id):
            response = self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": part.number, "ETag": part.etag} for part in ordered]
                },
            )
        if checksum is not None:
            return StoredObject(key=key, size=sum(part.size for part in ordered), checksum=checksum)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if response.get("ETag"):
            params["IfMatch"] = response["ETag"]
        with _translated("GET (checksum)", self.bucket, key):
            try:
                got = self._client.get_object(**params)
            except ClientError as exc:
                if _code(exc) not in ("PreconditionFailed", "412"):
                    raise
                raise StorageUnavailable(
                    f"S3 object {self.bucket}/{key!r} was replaced right after upload "
                    f"{upload_id} completed; its checksum cannot be computed"
                ) from exc
        hasher = hashlib.sha256()
        size = 0
        for chunk in _BodyStream(got["Body"], self.bucket, key, DEFAULT_CHUNK_SIZE):
            hasher.update(chunk)
            size += len(chunk)
        return StoredObject(key=key, size=size, checksum=f"sha256:{hasher.hexdigest()}")

    def abort_parts(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; NoSuchUpload (unknown, aborted or completed) is a no-op."""
        validate_key(key)
        try:
            _check_upload_id(key, upload_id)
            with self._on_upload("AbortMultipartUpload", key, upload_id):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ObjectNotFound:
            return

    @contextlib.contextmanager
    def _on_upload(self, action: str, key: str, upload_id: str) -> Iterator[None]:
        """:func:`_translated_upload`, and a server error on an upload that does not exist means
        :class:`ObjectNotFound` too: S3 answers an unknown upload id with NoSuchUpload, but some
        S3-compatible servers (moto) fail with a 500 instead. Only a failed call pays for the
        ListParts that tells them apart."""
        with _translated_upload(action, self.bucket, key):
            try:
                yield
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if status >= 500 and not self._upload_exists(key, upload_id):
                    raise ObjectNotFound(key) from exc
                raise

    def _upload_exists(self, key: str, upload_id: str) -> bool:
        """False only if the server says NoSuchUpload; any doubt is True (the caller's original
        error then stands)."""
        try:
            self._client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id, MaxParts=1)
        except ClientError as exc:
            return _code(exc) != "NoSuchUpload"
        except Exception:
            return True
        return True

    # -- reading --------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo:
        """Size, ContentType and LastModified of the object."""
        validate_key(key)
        with _translated("HEAD", self.bucket, key):
            try:
                response = self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    # A HEAD answer has no body: a missing bucket is also a bare 404. Telling
                    # them apart costs a request only on a miss.
                    self.check()
                raise
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            content_type=response.get("ContentType"),
            modified_at=_utc(response["LastModified"]),
        )

    def iter_chunks(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` with one (ranged) GetObject, sent by this call.

        A missing object therefore raises here, not on the first chunk, and the bytes come
        from the one version that existed at the call even if the key is replaced meanwhile.
        The response is closed when the iterator is exhausted, closed or garbage collected.
        """
        check_range(start, end, chunk_size)
        validate_key(key)
        if end == start:
            self.head(key)  # no Range can ask for zero bytes; the existence check still holds
            return iter(())
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start > 0 or end is not None:
            # HTTP ranges are inclusive; an end past the object is clamped by the server.
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with _translated("GET", self.bucket, key):
            try:
                response = self._client.get_object(**params)
            except ClientError as exc:
                if _code(exc) == "InvalidRange":
                    # 416: the object exists but starts after ``start`` ends it (or it is
                    # empty): the range holds no bytes.
                    return iter(())
                raise
        return _BodyStream(response["Body"], self.bucket, key, chunk_size)

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """ListObjectsV2 over ``prefix``; the first page is fetched by this call, so a missing
        bucket or an unreachable endpoint raises here. Incomplete multipart uploads are never
        listed (S3 keeps them apart), and neither are keys no call here could address."""
        directory, _, _ = prefix.rpartition("/")
        if directory:
            validate_key(directory)  # the same rule as the local backend
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
            )
        )
        action = f"LIST prefix {prefix!r}"
        with _translated(action, self.bucket):
            first = next(pages, None)
        return self._list(first, pages, action)

    def _list(
        self, page: dict[str, Any] | None, pages: Iterator[dict[str, Any]], action: str
    ) -> Iterator[ObjectInfo]:
        while page is not None:
            for item in page.get("Contents", ()):
                key = item["Key"]
                if not is_valid_key(key):
                    continue
                yield ObjectInfo(
                    key=key,
                    size=item["Size"],
                    content_type=None,  # ListObjectsV2 does not return it
                    modified_at=_utc(item["LastModified"]),
                )
            with _translated(action, self.bucket):
                page = next(pages, None)

    # -- URLs -----------------------------------------------------------------------------------

    def presigned_get_url(
        self, key: str, expires_in: int, *, content_type: str, disposition: str
    ) -> str | None:
        """A SigV4 presigned GET that makes S3 answer with ``content_type`` and ``disposition``.

        Signed locally, without a request; it does not check that the object exists. None if
        ``expires_in`` is over SigV4's 7-day maximum (the service then signs its own URL).
        With temporary credentials (an IAM role), the URL also dies with the session token.
        """
        validate_key(key)
        if expires_in <= 0:
            raise ValueError(f"expires_in must be > 0 seconds, got {expires_in}")
        if expires_in > MAX_PRESIGN_SECONDS:
            return None
        with _translated("presign GET", self.bucket, key):
            return str(
                self._client.generate_presigned_url(
                    "get_object",
                    Params={
                        "Bucket": self.bucket,
                        "Key": key,
                        "ResponseContentType": content_type,
                        "ResponseContentDisposition": disposition,
                    },
                    ExpiresIn=expires_in,
                )
            )

    # -- uploads straight to the bucket ---------------------------------------------------------

    def presign_part(self, key: str, upload_id: str, number: int, expires_in: int) -> str:
        """A SigV4 presigned UploadPart; the client's PUT answers with the part's ETag."""
        validate_key(key)
        check_part_number(number)
        _check_upload_id(key, upload_id)
        _check_presign_lifetime(expires_in)
        with _translated("presign UploadPart", self.bucket, key):
            return str(
                self._client.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": self.bucket,
                        "Key": key,
                        "UploadId": upload_id,
                        "PartNumber": number,
                    },
                    ExpiresIn=expires_in,
                )
            )

    def presign_post(
        self, key: str, size: int, content_type: str, expires_in: int
    ) -> dict[str, Any]:
        """A presigned POST policy pinning the key, the content type and the exact size."""
        validate_key(key)
        _check_presign_lifetime(expires_in)
        with _translated("presign POST", self.bucket, key):
            post = self._client.generate_presigned_post(
                Bucket=self.bucket,
                Key=key,
                Fields={"Content-Type": content_type},
                Conditions=[
                    {"Content-Type": content_type},
                    ["content-length-range", size, size],
                ],
                ExpiresIn=expires_in,
            )
        return {"url": str(post["url"]), "fields": {k: str(v) for k, v in post["fields"].items()}}

    def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        validate_key(key)
        _check_upload_id(key, upload_id)
        parts: list[PartInfo] = []
        marker = 0
        while True:
            with self._on_upload("ListParts", key, upload_id):
                response = self._client.list_parts(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
            parts.extend(
                PartInfo(number=int(p["PartNumber"]), size=int(p["Size"]), etag=str(p["ETag"]))
                for p in response.get("Parts", [])
            )
            if not response.get("IsTruncated"):
                return sorted(parts, key=lambda part: part.number)
            marker = int(response["NextPartNumberMarker"])

    # -- maintenance ----------------------------------------------------------------------------

    def abort_incomplete_uploads(self, older_than: timedelta) -> int:
        """Abort multipart uploads started more than ``older_than`` ago; return how many.

        ``put`` aborts its own upload on failure, but a process killed mid-upload cannot. Pick
        ``older_than`` above the longest upload in flight, or live uploads get aborted.
        """
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        cutoff = datetime.now(UTC) - older_than
        paginator = self._client.get_paginator("list_multipart_uploads")
        aborted = 0
        with _translated("ListMultipartUploads", self.bucket):
            for page in paginator.paginate(
                Bucket=self.bucket, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
            ):
                for upload in page.get("Uploads", ()):
                    if _utc(upload["Initiated"]) >= cutoff:
                        continue
                    try:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if _code(exc) != "NoSuchUpload":
                            raise
                        continue  # completed or aborted since it was listed
                    aborted += 1
        return aborted

    # -- health ---------------------------------------------------------------------------------

    def check(self) -> None:
        """HeadBucket: the endpoint answers, the bucket exists and the credentials may use it."""
        with _translated("HEAD bucket", self.bucket):
            self._client.head_bucket(Bucket=self.bucket)


class _MultipartUpload:
    """One multipart upload in progress: its parts' ETags, and how to finish or abort it."""

    def __init__(self, client: Any, bucket: str, key: str, upload_id: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._upload_id = upload_id
        self._parts: list[dict[str, Any]] = []

    def send(self, data: bytearray) -> None:
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise ValueError(
                f"object of {self._key!r} needs more than {MAX_PARTS} parts; raise part_size"
            )
        with _translated(f"UploadPart {number}", self._bucket, self._key):
            response = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def complete(self) -> None:
        with _translated("CompleteMultipartUpload", self._bucket, self._key):
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )

    def abort(self) -> None:
        """Best effort: called while another error propagates, which must not be hidden."""
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        except Exception as exc:  # botocore's or anything else: the original error wins
            logger.warning(
                "could not abort multipart upload %s of %r in bucket %r (left for "
                "abort_incomplete_uploads or a lifecycle rule): %s",
                self._upload_id,
                self._key,
                self._bucket,
                exc,
            )


class _BodyStream(Iterator[bytes]):
    """Chunks of a GetObject response body; closing it releases the HTTP connection.

    A class rather than a generator: a generator never started never runs its ``finally``,
    and an iterator the caller drops unread must not keep its connection open.
    """

    def __init__(self, body: Any, bucket: str, key: str, chunk_size: int) -> None:
        self._body: Any | None = body
        self._bucket = bucket
        self._key = key
        self._chunk_size = chunk_size

    def __iter__(self) -> _BodyStream:
        return self

    def __next__(self) -> bytes:
        if self._body is None:
            raise StopIteration
        try:
            with _translated("GET", self._bucket, self._key):
                data = self._body.read(self._chunk_size)
        except BaseException:
            self.close()
            raise
        if not data:
            self.close()
            raise StopIteration
        return bytes(data)

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):  # closing a broken connection is not news
                body.close()

    def __del__(self) -> None:
        self.close()


def _make_client(
    bucket: str,
    endpoint_url: str | None,
    region: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
) -> Any:
    config = Config(
        signature_version="s3v4",
        # MinIO, Ceph and moto serve buckets under the path; virtual hosts need DNS per bucket.
        s3={"addressing_style": "path"} if endpoint_url else None,
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        # boto3 >= 1.36 adds CRC32 checksums to every upload and checks them on downloads by
        # default; several S3-compatible servers (GCS interop, older MinIO and Ceph) reject
        # or lack them. Only send them where the API requires one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A session of its own: boto3's default session is shared module state and not thread-safe.
    session = boto3.session.Session()
    with _translated("client setup for", bucket):
        return session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "Unknown")


@contextlib.contextmanager
def _translated(action: str, bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn botocore's errors into storage errors; none of botocore's may reach a caller.

    ``key`` set: "no such key" means :class:`ObjectNotFound`. Anything else the server says
    (NoSuchBucket, AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, SlowDown, ...) and
    anything on the way to it means :class:`StorageUnavailable`, with the reason.
    """
    target = f"{bucket}/{key}" if key is not None else bucket
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if key is not None and code in _NOT_FOUND:
            raise ObjectNotFound(key) from exc
        message = exc.response.get("Error", {}).get("Message") or ""
        raise StorageUnavailable(
            f"S3 {action} {target!r} failed: {code}" + (f" ({message})" if message else "")
        ) from exc
    except (BotoConnectionError, HTTPClientError, URLLib3HTTPError) as exc:
        # Connection refused, DNS, TLS, timeouts, a connection dropped mid-body. urllib3's own
        # errors can surface from reads of a response body.
        raise StorageUnavailable(f"S3 endpoint unreachable: {action} {target!r}: {exc}") from exc
    except BotoCoreError as exc:
        # No credentials, a bad endpoint URL, an incomplete body: the store cannot be used.
        raise StorageUnavailable(f"S3 {action} {target!r} failed: {exc}") from exc


@contextlib.contextmanager
def _translated_upload(action: str, bucket: str, key: str) -> Iterator[None]:
    """:func:`_translated` for calls on a multipart upload: NoSuchUpload means
    :class:`ObjectNotFound`, a part list S3 rejects means ValueError."""
    with _translated(action, bucket, key):
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if code == "NoSuchUpload":
                raise ObjectNotFound(key) from exc
            if code in _BAD_PART_LIST:
                message = exc.response.get("Error", {}).get("Message") or ""
                raise ValueError(
                    f"S3 {action} {bucket}/{key!r} refused the part list: {code}"
                    + (f" ({message})" if message else "")
                ) from exc
            raise


def _check_presign_lifetime(expires_in: int) -> None:
    if not 0 < expires_in <= MAX_PRESIGN_SECONDS:
        raise ValueError(
            f"expires_in must be between 1 and {MAX_PRESIGN_SECONDS} seconds, got {expires_in}"
        )


def _check_upload_id(key: str, upload_id: str) -> None:
    # An empty id would make boto3 fail its parameter validation, which reads as an outage.
    if not isinstance(upload_id, str) or not upload_id:
        raise ObjectNotFound(key)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
