"""Upload sessions end to end on the S3 backend: parts become S3 multipart parts, whether they come
over RPC, over tus, or straight from the client through presigned URLs."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
import requests

from services.media.exceptions import Conflict, UnsupportedMediaType
from tests.files import noisy_png_bytes

MiB = 1024 * 1024


def _originals(client, bucket):
    """Keys of stored files, without the variants processing may have added beside them."""
    contents = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [item["Key"] for item in contents if "." not in item["Key"]]


def _incomplete_uploads(client, bucket):
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_a_file_in_parts_out_of_order_on_s3(s3_service, connect, bucket):
    client, name = bucket
    data = noisy_png_bytes(9 * MiB)
    with connect(user_id="u-1", timeout=60) as media:
        started = media.initiateUpload(
            {
                "originalName": "big.png",
                "userId": "u-1",
                "size": len(data),
                "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
            }
        )
        chunk = started["chunkSize"]
        offsets = list(range(0, len(data), chunk))
        for offset in reversed(offsets):
            piece = base64.b64encode(data[offset : offset + chunk]).decode()
            media.uploadPart(started["uploadId"], offset, piece)
        record = media.completeUpload(started["uploadId"])
        assert media.getUploadProgress(started["uploadId"])["mediaId"] == record["id"]
    assert record["size"] == len(data) and record["status"] == "PROCESSING"
    (key,) = _originals(client, name)
    assert client.get_object(Bucket=name, Key=key)["Body"].read() == data
    assert _incomplete_uploads(client, name) == []


def test_cancel_leaves_no_incomplete_multipart_upload(s3_service, connect, bucket):
    client, name = bucket
    with connect(user_id="u-1", timeout=60) as media:
        started = media.initiateUpload({"originalName": "a.bin", "userId": "u-1", "size": 20 * MiB})
        first = base64.b64encode(os.urandom(started["chunkSize"])).decode()
        media.uploadPart(started["uploadId"], 0, first)
        assert len(_incomplete_uploads(client, name)) == 1
        assert media.cancelUpload(started["uploadId"])["status"] == "CANCELLED"
    assert _incomplete_uploads(client, name) == []
    assert client.list_objects_v2(Bucket=name).get("Contents", []) == []


# -- tus on S3: the partial part between requests is a side object in the bucket ---------------


def test_tus_stream_in_odd_sized_requests_on_s3(s3_service, connect, bucket, service_config):
    client, name = bucket
    data = b"\x00\x00\x00\x18ftypmp42" + os.urandom(17 * MiB)
    with connect(user_id="u-1", timeout=60) as media:
        started = media.initiateUpload(
            {"originalName": "a.mp4", "userId": "u-1", "size": len(data)}
        )
    headers = {
        "Tus-Resumable": "1.0.0",
        "Authorization": f"Bearer {started['uploadToken']}",
        "Content-Type": "application/offset+octet-stream",
    }
    offset = 0
    for size in (3 * MiB, 6 * MiB, 5 * MiB, len(data)):
        piece = data[offset : offset + size]
        response = requests.patch(
            started["uploadUrl"],
            data=piece,
            headers=headers | {"Upload-Offset": str(offset)},
            timeout=60,
        )
        assert response.status_code == 204, response.text
        offset += len(piece)
        keys = [item["Key"] for item in client.list_objects_v2(Bucket=name).get("Contents", [])]
        if offset < len(data):
            # Whole parts went to the multipart upload; the rest waits as one tail object.
            assert len(keys) == (1 if offset % started["chunkSize"] else 0), keys
            assert len(_incomplete_uploads(client, name)) == 1
    with connect(user_id="u-1") as media:
        record = media.findOne(response.headers["Media-Id"])
    assert record["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    (key,) = _originals(client, name)
    assert client.get_object(Bucket=name, Key=key)["Body"].read() == data
    assert _incomplete_uploads(client, name) == []


def test_tus_whole_file_in_one_request_on_s3(s3_service, connect, bucket):
    """One PATCH with the whole file: its parts are stored while the next ones arrive and it is
    hashed on its way, so completion takes that hash instead of downloading the object."""
    client, name = bucket
    data = b"\x00\x00\x00\x18ftypmp42" + os.urandom(19 * MiB)
    with connect(user_id="u-1", timeout=60) as media:
        started = media.initiateUpload(
            {"originalName": "a.mp4", "userId": "u-1", "size": len(data)}
        )
    response = requests.patch(
        started["uploadUrl"],
        data=data,
        headers={
            "Tus-Resumable": "1.0.0",
            "Authorization": f"Bearer {started['uploadToken']}",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        },
        timeout=60,
    )
    assert response.status_code == 204, response.text
    with connect(user_id="u-1") as media:
        record = media.findOne(response.headers["Media-Id"])
    assert record["size"] == len(data)
    assert record["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    (key,) = _originals(client, name)
    assert client.get_object(Bucket=name, Key=key)["Body"].read() == data
    assert _incomplete_uploads(client, name) == []


# -- straight to the bucket --------------------------------------------------------------------


def test_direct_upload_in_presigned_parts(s3_service, connect, bucket):
    client, name = bucket
    data = noisy_png_bytes(17 * MiB)
    with connect(user_id="u-1", timeout=60) as media:
        started = media.initiateUpload(
            {
                "originalName": "big.png",
                "userId": "u-1",
                "size": len(data),
                "direct": True,
                "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
            }
        )
        assert started["uploadUrl"] is None and started["uploadToken"] is None
        plan = started["directUpload"]
        assert plan["method"] == "PUT" and len(plan["parts"]) == 3
        for part in reversed(plan["parts"]):
            body = data[part["offset"] : part["offset"] + part["size"]]
            assert requests.put(part["url"], data=body, timeout=60).ok
        progress = media.getUploadProgress(started["uploadId"])
        assert progress["bytesUploaded"] == len(data)
        assert progress["percentComplete"] < 100  # not verified yet
        record = media.completeUpload(started["uploadId"])
    assert record["status"] == "PROCESSING" and record["mimeType"] == "image/png"
    assert record["size"] == len(data)
    (key,) = _originals(client, name)
    assert client.get_object(Bucket=name, Key=key)["Body"].read() == data
    assert _incomplete_uploads(client, name) == []


def test_direct_upload_with_missing_parts_is_not_completed(s3_service, connect, bucket):
    client, name = bucket
    with connect(user_id="u-1", timeout=60) as media:
        started = media.initiateUpload(
            {"originalName": "a.mp4", "userId": "u-1", "size": 17 * MiB, "direct": True}
        )
        first = started["directUpload"]["parts"][0]
        assert requests.put(first["url"], data=os.urandom(first["size"]), timeout=60).ok
        with pytest.raises(Conflict, match=str(8 * MiB)):
            media.completeUpload(started["uploadId"])
        media.cancelUpload(started["uploadId"])
    assert _incomplete_uploads(client, name) == []
    assert client.list_objects_v2(Bucket=name).get("Contents", []) == []


def test_direct_upload_of_a_small_file_by_presigned_post(s3_service, connect, bucket):
    client, name = bucket
    data = noisy_png_bytes(200_000)
    with connect(user_id="u-1", timeout=60) as media:
        started = media.initiateUpload(
            {"originalName": "small.png", "userId": "u-1", "size": len(data), "direct": True}
        )
        plan = started["directUpload"]
        assert plan["method"] == "POST"
        with pytest.raises(Conflict, match="nothing has been posted"):
            media.completeUpload(started["uploadId"])
        response = requests.post(
            plan["url"], data=plan["fields"], files={"file": ("small.png", data)}, timeout=60
        )
        assert response.ok, response.text
        record = media.completeUpload(started["uploadId"])
    assert record["size"] == len(data) and record["mimeType"] == "image/png"
    assert record["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    (key,) = _originals(client, name)
    assert client.get_object(Bucket=name, Key=key)["Body"].read() == data


def test_a_direct_upload_of_refused_content_leaves_nothing(s3_service, connect, bucket):
    client, name = bucket
    page = b"<!DOCTYPE html><html><script>alert(1)</script></html>"
    with connect(user_id="u-1", timeout=60) as media:
        started = media.initiateUpload(
            {"originalName": "p.png", "userId": "u-1", "size": len(page), "direct": True}
        )
        plan = started["directUpload"]
        requests.post(plan["url"], data=plan["fields"], files={"file": ("p.png", page)}, timeout=60)
        with pytest.raises(UnsupportedMediaType):
            media.completeUpload(started["uploadId"])
        assert media.getUploadProgress(started["uploadId"])["status"] == "FAILED"
    assert client.list_objects_v2(Bucket=name).get("Contents", []) == []
