"""Upload sessions end to end over RPC, on the S3 backend: parts become S3 multipart parts."""

from __future__ import annotations

import base64
import hashlib
import os

from tests.files import noisy_png_bytes

MiB = 1024 * 1024


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
    assert record["size"] == len(data) and record["status"] == "READY"
    (key,) = [item["Key"] for item in client.list_objects_v2(Bucket=name)["Contents"]]
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
