"""The tus 1.0 server on the HTTP endpoint, driven by a stock client (tuspy) and by hand."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import eventlet
import pytest
import requests
from tusclient import client as tus_client

from tests.files import noisy_png_bytes, write_mp4_like, write_playable_mp4

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def _start(rpc: Any, size: int, name: str = "clip.mp4", **extra: Any) -> dict[str, Any]:
    with rpc(user_id="u-1") as media:
        return media.initiateUpload({"originalName": name, "userId": "u-1", "size": size} | extra)


def _auth(started: dict[str, Any]) -> dict[str, str]:
    return TUS | {"Authorization": f"Bearer {started['uploadToken']}"}


def _patch(started: dict[str, Any], offset: int, body: Any, **headers: str) -> requests.Response:
    return requests.patch(
        started["uploadUrl"],
        data=body,
        headers=_auth(started)
        | {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        | headers,
        timeout=60,
    )


def _offset(started: dict[str, Any]) -> int:
    response = requests.head(started["uploadUrl"], headers=_auth(started), timeout=10)
    assert response.status_code == 200, response.text
    return int(response.headers["Upload-Offset"])


def _stored_files(config: dict[str, Any]) -> list[Path]:
    root = Path(config["STORAGE_ROOT"])
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


class DroppingProxy:
    """A TCP relay to the service that cuts the connection once, mid-request, after ``after``
    bytes from the client: a mobile network dropping in the middle of a chunk."""

    def __init__(self, target: tuple[str, int], after: int) -> None:
        self.target = target
        self.after = after
        self.sent = 0  # client bytes relayed, over all connections
        self.dropped = False
        self.listener = eventlet.listen(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._relays: list[eventlet.greenthread.GreenThread] = []
        self._thread = eventlet.spawn(self._serve)

    def _serve(self) -> None:
        while True:
            client, _ = self.listener.accept()
            self._relays.append(eventlet.spawn(self._relay, client))

    def _relay(self, client: socket.socket) -> None:
        upstream = eventlet.connect(self.target)
        pipes = [
            eventlet.spawn(self._pipe, client, upstream, count=True),
            eventlet.spawn(self._pipe, upstream, client, count=False),
        ]
        try:
            for pipe in pipes:
                pipe.wait()
        finally:
            # Closed only once neither pipe waits on them: eventlet's close does not tell the
            # hub, so a socket closed under a waiting green thread leaves a listener on its fd,
            # and the next connection given that fd number (a database's, say) fails.
            for pipe in pipes:
                pipe.kill()
            client.close()
            upstream.close()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(256 * 1024):
                if count and not self.dropped and self.sent + len(data) > self.after:
                    self.dropped = True
                    sink.sendall(data[: self.after - self.sent])
                    raise ConnectionError("dropped by the test")
                sink.sendall(data)
                if count:
                    self.sent += len(data)
        except (OSError, EOFError):
            pass  # one side went away
        finally:
            # Shutting both down wakes the other pipe with an end of stream.
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._thread.kill()
        for relay in self._relays:
            relay.kill()
        self.listener.close()


@pytest.fixture
def web_target(service_config: dict[str, Any]) -> tuple[str, int]:
    host, port = service_config["WEB_SERVER_ADDRESS"].split(":")
    return host, int(port)


# -- a stock client ------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_tuspy_uploads_300mb_and_resumes_after_a_dropped_connection(
    rpc, service_config, web_target, tmp_path
):
    path = tmp_path / "lecture.mp4"
    size = 300 * 1000 * 1000
    digest = write_playable_mp4(path, size)
    started = _start(rpc, size, "lecture.mp4")
    # The client talks through a relay that drops the connection 100 MB into a 64 MiB chunk.
    proxy = DroppingProxy(web_target, after=100 * MiB + 12345)
    try:
        through_proxy = started["uploadUrl"].replace(f":{web_target[1]}/", f":{proxy.port}/", 1)
        client = tus_client.TusClient(
            through_proxy.rsplit("/", 1)[0],
            headers={"Authorization": f"Bearer {started['uploadToken']}"},
        )
        with open(path, "rb") as stream:
            uploader = client.uploader(
                file_stream=stream,
                url=through_proxy,
                chunk_size=64 * MiB,
                retries=3,
                retry_delay=0,
            )
            uploader.upload()
    finally:
        proxy.close()
    assert proxy.dropped, "the relay never cut the connection"
    with rpc(user_id="u-1") as media:
        progress = media.getUploadProgress(started["uploadId"])
        with eventlet.Timeout(60):
            while (record := media.findOne(progress["mediaId"]))["status"] == "PROCESSING":
                eventlet.sleep(0.2)
    assert progress["status"] == "READY" and progress["percentComplete"] == 100.0
    assert record["status"] == "READY", record["processingError"]
    assert record["type"] == "VIDEO"
    assert record["facts"]["duration"] == pytest.approx(2.0, abs=0.1)
    assert record["size"] == size
    assert record["checksum"] == "sha256:" + digest.hex()
    # Byte-identical, read back over the file endpoint.
    downloaded = hashlib.sha256()
    with requests.get(record["url"], stream=True, timeout=60) as response:
        for block in response.iter_content(MiB):
            downloaded.update(block)
    assert downloaded.digest() == digest
    # Only the assembled file (and the poster and thumbnails processing made) is left: no
    # parts, no tails.
    assert len([p for p in _stored_files(service_config) if "." not in p.name]) == 1
    assert not [p for p in _stored_files(service_config) if ".tail-" in p.name]


def test_tuspy_creation_with_checksums_in_small_chunks(rpc, service_config, tmp_path):
    """Chunks that do not line up with the session's parts, each checked with sha256."""
    path = tmp_path / "clip.mp4"
    size = 20 * MiB + 4321
    digest = write_mp4_like(path, size)
    started = _start(rpc, size)
    base = service_config["PUBLIC_BASE_URL"]
    client = tus_client.TusClient(
        f"{base}/uploads", headers={"Authorization": f"Bearer {started['uploadToken']}"}
    )
    with open(path, "rb") as stream:
        uploader = client.uploader(
            file_stream=stream, chunk_size=3 * MiB, upload_checksum=True, metadata={"a": "b"}
        )
        uploader.upload()
    assert uploader.url == started["uploadUrl"]  # creation handed out the token's session
    with rpc(user_id="u-1") as media:
        record = media.findOne(media.getUploadProgress(started["uploadId"])["mediaId"])
    assert record["checksum"] == "sha256:" + digest.hex()
    assert len(_stored_files(service_config)) == 1


# -- the protocol by hand --------------------------------------------------------------------------


def test_options_advertises_version_extensions_and_limits(rpc, service_config):
    response = requests.options(f"{service_config['PUBLIC_BASE_URL']}/uploads", timeout=10)
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert "sha256" in response.headers["Tus-Checksum-Algorithm"].split(",")
    assert int(response.headers["Tus-Max-Size"]) == 5368709120
    assert "Upload-Offset" in response.headers["Access-Control-Expose-Headers"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_head_reports_offset_length_and_expiry(rpc):
    started = _start(rpc, 2 * MiB)
    response = requests.head(started["uploadUrl"], headers=_auth(started), timeout=10)
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == str(2 * MiB)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    expires = parsedate_to_datetime(response.headers["Upload-Expires"])
    assert expires.isoformat().replace("+00:00", "") <= started["expiresAt"].rstrip("Z")


def test_a_patch_is_stored_and_the_offset_moves(rpc):
    started = _start(rpc, 2 * MiB)
    body = b"\x00\x00\x00\x18ftypmp42" + os.urandom(MiB - 12)
    response = _patch(started, 0, body)
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(MiB)
    assert "Upload-Expires" in response.headers
    assert _offset(started) == MiB
    with rpc(user_id="u-1") as media:
        progress = media.getUploadProgress(started["uploadId"])
    assert progress["bytesUploaded"] == MiB and progress["status"] == "UPLOADING"
    assert 0 < progress["percentComplete"] < 100


def test_a_whole_file_in_one_patch_is_stored_and_verified(rpc, service_config):
    data = b"\x00\x00\x00\x18ftypmp42" + os.urandom(19 * MiB)
    started = _start(rpc, len(data))
    response = _patch(started, 0, data)
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    with rpc(user_id="u-1") as media:
        record = media.findOne(response.headers["Media-Id"])
    assert record["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest()
    (stored,) = [path for path in _stored_files(service_config) if path.stat().st_size == len(data)]
    assert stored.read_bytes() == data


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Tus-Resumable": "0.2.2"}, 412),
        ({"Authorization": ""}, 401),
        ({"Authorization": "Bearer nonsense"}, 401),
        ({"Content-Type": "application/octet-stream"}, 415),
        ({"Upload-Offset": "-1"}, 400),
        ({"Upload-Offset": "4"}, 409),
        ({"Upload-Checksum": "crc32 AAAA"}, 400),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(rpc, headers, status):
    started = _start(rpc, 2 * MiB)
    response = _patch(started, 0, b"x" * 1000, **headers)
    assert response.status_code == status, response.text
    assert response.text.strip()
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if status == 409:
        assert response.headers["Upload-Offset"] == "0"
    assert _offset(started) == 0


def test_a_token_opens_only_its_own_upload(rpc):
    first, second = _start(rpc, MiB), _start(rpc, MiB)
    response = requests.head(
        second["uploadUrl"],
        headers=TUS | {"Authorization": f"Bearer {first['uploadToken']}"},
        timeout=10,
    )
    assert response.status_code == 403
    forged = first["uploadToken"].rsplit(".", 1)[0] + "." + "0" * 64
    response = requests.head(
        first["uploadUrl"], headers=TUS | {"Authorization": f"Bearer {forged}"}, timeout=10
    )
    assert response.status_code == 401


def test_renewed_access_gives_a_working_token(rpc):
    started = _start(rpc, MiB)
    with rpc(user_id="u-1") as media:
        renewed = media.renewUploadAccess(started["uploadId"])
    assert renewed["uploadUrl"] == started["uploadUrl"]
    assert renewed["uploadTokenExpiresAt"] >= started["uploadTokenExpiresAt"]
    assert requests.head(renewed["uploadUrl"], headers=_auth(renewed), timeout=10).ok


def test_a_checksum_mismatch_is_460_and_keeps_nothing(rpc):
    started = _start(rpc, 2 * MiB)
    body = b"\x00\x00\x00\x18ftypmp42" + os.urandom(MiB - 12)
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    response = _patch(started, 0, body, **{"Upload-Checksum": f"sha256 {wrong}"})
    assert response.status_code == 460
    assert _offset(started) == 0
    right = base64.b64encode(hashlib.sha256(body).digest()).decode()
    response = _patch(started, 0, body, **{"Upload-Checksum": f"sha256 {right}"})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == str(MiB)


def test_creation_with_upload_returns_the_location_and_offset(rpc, service_config):
    data = noisy_png_bytes(300_000)
    started = _start(rpc, len(data), "photo.png")
    response = requests.post(
        f"{service_config['PUBLIC_BASE_URL']}/uploads",
        data=data,
        headers=_auth(started)
        | {
            "Upload-Length": str(len(data)),
            "Upload-Metadata": "filename " + base64.b64encode(b"photo.png").decode(),
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == started["uploadUrl"]
    assert response.headers["Upload-Offset"] == str(len(data))
    with rpc(user_id="u-1") as media:
        record = media.findOne(response.headers["Media-Id"])
    assert record["mimeType"] == "image/png" and record["size"] == len(data)


def test_creation_must_match_the_declared_length(rpc, service_config):
    started = _start(rpc, MiB)
    response = requests.post(
        f"{service_config['PUBLIC_BASE_URL']}/uploads",
        headers=_auth(started) | {"Upload-Length": str(MiB + 1)},
        timeout=10,
    )
    assert response.status_code == 400 and "initiateUpload" in response.text


def test_termination_discards_the_bytes(rpc, service_config):
    started = _start(rpc, 20 * MiB)
    body = b"\x00\x00\x00\x18ftypmp42" + os.urandom(9 * MiB)
    assert _patch(started, 0, body).status_code == 204
    assert _stored_files(service_config)  # a part and the tail
    response = requests.delete(started["uploadUrl"], headers=_auth(started), timeout=10)
    assert response.status_code == 204
    assert (
        requests.head(started["uploadUrl"], headers=_auth(started), timeout=10).status_code == 410
    )
    assert _stored_files(service_config) == []
    with rpc(user_id="u-1") as media:
        assert media.getUploadProgress(started["uploadId"])["status"] == "CANCELLED"


def test_a_client_sending_more_than_it_declared_is_cut_off(rpc, service_config):
    started = _start(rpc, MiB)
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        block = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * (64 * 1024 - 12)
        while sent < 100 * MiB:
            sent += len(block)
            yield block

    try:
        response = _patch(started, 0, endless())  # chunked: no length to refuse up front
        assert response.status_code == 413
    except requests.ConnectionError:
        pass  # the server closed the connection while the client was still sending
    assert sent < 100 * MiB
    with rpc(user_id="u-1") as media:
        progress = media.getUploadProgress(started["uploadId"])
    assert progress["status"] == "FAILED" and "declared" in progress["failureReason"]
    assert _stored_files(service_config) == []


def test_a_declared_length_past_the_size_is_refused_before_reading(rpc):
    started = _start(rpc, MiB)
    response = _patch(started, 0, b"\x00" * (MiB + 1))
    assert response.status_code == 413
    assert _offset(started) == 0


def test_content_of_a_refused_type_fails_the_upload_and_keeps_nothing(rpc, service_config):
    body = b"<!DOCTYPE html><html><script>alert(1)</script></html>" + b" " * 1000
    started = _start(rpc, len(body), "page.png")
    response = _patch(started, 0, body)
    assert response.status_code == 415, response.text
    assert (
        requests.head(started["uploadUrl"], headers=_auth(started), timeout=10).status_code == 410
    )
    assert _stored_files(service_config) == []
