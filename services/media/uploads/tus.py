"""The tus 1.0 resumable-upload protocol on the HTTP endpoint, over upload sessions.

Core protocol plus the creation, creation-with-upload, termination, checksum and expiration
extensions, so stock tus clients work unchanged. A session is started with ``initiateUpload``
over RPC, which returns the upload URL and a bearer token for it: the token, sent as
``Authorization: Bearer <token>``, is the only credential this side takes, and it is good for
that one upload only. A client may also POST to ``/uploads`` with the token (the creation
extension): it is then given the URL of the token's session.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC
from typing import Any

from werkzeug.http import http_date
from werkzeug.wrappers import Request, Response

from services.media.core.identity import INTERNAL
from services.media.core.models import UploadSession
from services.media.core.vocabulary import UPLOAD_OPEN, UploadStatus
from services.media.delivery.urls import MediaUrls, TokenRejected
from services.media.exceptions import Conflict, MediaError, PayloadTooLarge, http_status
from services.media.uploads.sessions import (
    SUPPORTED_CHECKSUMS,
    ChecksumMismatch,
    OffsetMismatch,
    StreamInterrupted,
    Uploads,
)

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
OFFSET_STREAM = "application/offset+octet-stream"
CLOSED = (UploadStatus.CANCELLED, UploadStatus.EXPIRED, UploadStatus.FAILED)
BODY_LEFT_UNREAD = "media.body_left_unread"

# Most specific first: the checksum and offset errors are Conflicts too.
# tus's own answers; every other error has the status of exceptions.HTTP_STATUS.
TUS_STATUS = ((ChecksumMismatch, 460), (OffsetMismatch, 409))  # 460: Checksum Mismatch

# For tus clients in browsers (tus-js-client, Uppy): what they send and must be able to read.
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Upload-Offset, Upload-Length, Upload-Metadata, "
    "Upload-Checksum, Upload-Defer-Length, Upload-Concat, Tus-Resumable, "
    "X-HTTP-Method-Override, X-Requested-With"
)
EXPOSED_HEADERS = (
    "Location, Upload-Offset, Upload-Length, Upload-Expires, Upload-Metadata, Tus-Resumable, "
    "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, Media-Id"
)

BodyReader = Callable[[Request, int | None], Iterable[bytes]]


class Refused(Exception):
    """A request answered with ``status`` before any session is touched."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class TusProtocol:
    def __init__(
        self, uploads: Uploads, urls: MediaUrls, read_body: BodyReader, cors_origin: str
    ) -> None:
        self.uploads = uploads
        self.urls = urls
        self.read_body = read_body
        self.cors_origin = cors_origin
        self.base = uploads.settings.public_base_url

    def handle(self, request: Request, path_upload_id: str | None) -> Response:
        """Answer one tus request; contract errors from below propagate as MediaError."""
        method = request.method
        override = request.headers.get("X-HTTP-Method-Override", "").upper()
        if method == "POST" and override in ("PATCH", "DELETE", "HEAD"):
            method = override  # for clients behind proxies that only pass GET and POST
        if method == "OPTIONS":
            return self.finish(self._options(), status=204)
        try:
            if request.headers.get("Tus-Resumable") != TUS_VERSION:
                raise Refused(412, "this server speaks tus 1.0.0", {"Tus-Version": TUS_VERSION})
            upload_id = self._authorise(request, path_upload_id)
            if path_upload_id is None:
                if method != "POST":
                    raise Refused(405, "the upload collection takes POST and OPTIONS")
                return self._create(request, upload_id)
            upload = self.uploads.find(upload_id)
            if upload.status in CLOSED:
                raise Refused(410, f"the upload is {upload.status}")
            if method == "HEAD":
                return self._head(upload)
            if method == "PATCH":
                return self._patch(request, upload)
            if method == "DELETE":
                self.uploads.cancel(INTERNAL, upload.id)
                return self.finish(Response(status=204))
            raise Refused(405, f"{method} is not a tus method for an upload")
        except Refused as refusal:
            return self.error(refusal.status, str(refusal), refusal.headers)

    # -- the methods ------------------------------------------------------------------------

    def _options(self) -> Response:
        response = Response()
        limits = self.uploads.settings.upload_policy.values()
        response.headers.update(
            {
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": EXTENSIONS,
                "Tus-Checksum-Algorithm": ",".join(SUPPORTED_CHECKSUMS),
                "Tus-Max-Size": str(max((rule.max_bytes for rule in limits), default=0)),
                "Access-Control-Allow-Methods": "POST, HEAD, PATCH, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "86400",
            }
        )
        return response

    def _create(self, request: Request, upload_id: str) -> Response:
        if "Upload-Defer-Length" in request.headers:
            raise Refused(400, "declare the size with initiateUpload; deferred length is off")
        length = _header_int(request, "Upload-Length", required=True)
        _parse_metadata(request.headers.get("Upload-Metadata"))  # well-formed, else 400
        upload = self.uploads.find(upload_id)
        if upload.status in CLOSED:
            raise Refused(410, f"the upload is {upload.status}")
        if length != upload.size:
            raise Refused(
                400,
                f"Upload-Length {length} is not the size given to initiateUpload, {upload.size}",
            )
        response = Response(status=201)
        response.headers["Location"] = f"{self.base}/uploads/{upload.id}"
        if _has_body(request):
            # creation-with-upload: the body is the first bytes of the file.
            return self._patch(request, upload, response)
        return self.finish(self._describe(upload, response))

    def _head(self, upload: UploadSession) -> Response:
        offset = self.uploads.stream_offset(upload)
        upload_media_id: str | None
        if offset == upload.size and upload.status != UploadStatus.READY:
            # Every byte is in, but finishing failed for a passing reason (storage away, or
            # the process died): a client that asks where it stands finishes it.
            media = self.uploads.complete(INTERNAL, upload.id)
            upload = self.uploads.find(upload.id)
            upload_media_id = media.id
        else:
            upload_media_id = upload.media_id
        response = self._describe(upload, Response(status=200))
        response.headers["Upload-Offset"] = str(offset)
        if upload_media_id:
            response.headers["Media-Id"] = upload_media_id
        return self.finish(response)

    def _patch(
        self, request: Request, upload: UploadSession, response: Response | None = None
    ) -> Response:
        if request.mimetype != OFFSET_STREAM:
            raise Refused(415, f"PATCH bodies must be {OFFSET_STREAM}")
        offset = 0 if response is not None else _header_int(request, "Upload-Offset", True)
        length = _header_int(request, "Content-Length", required=False)
        checksum = _parse_checksum(request.headers.get("Upload-Checksum"))
        if upload.status == UploadStatus.VERIFYING or upload.status == UploadStatus.READY:
            raise Conflict(f"upload {upload.id!r} has all its bytes")
        try:
            appended = self.uploads.append(
                upload.id, offset, self.read_body(request, length), length, checksum
            )
        except PayloadTooLarge:
            _stop_reading(request)
            raise
        except StreamInterrupted as exc:
            log.info(
                "upload %s: the client stopped sending (%s); kept what arrived", upload.id, exc
            )
            return self.error(400, f"the request body ended early: {exc}")
        response = response or Response(status=204)
        response.headers["Upload-Offset"] = str(appended.end)
        upload = self.uploads.find(upload.id)
        if appended.end == upload.size:
            media = self.uploads.complete(INTERNAL, upload.id, appended.streamed)
            response.headers["Media-Id"] = media.id
            upload = self.uploads.find(upload.id)
        return self.finish(self._describe(upload, response))

    # -- helpers ----------------------------------------------------------------------------

    def _authorise(self, request: Request, path_upload_id: str | None) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="uploads"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "send the upload token as Authorization: Bearer <token>", challenge)
        try:
            upload_id = self.urls.verify_upload_token(token.strip())
        except TokenRejected as exc:
            challenge["WWW-Authenticate"] += ', error="invalid_token"'
            raise Refused(401, str(exc), challenge) from None
        if path_upload_id is not None and path_upload_id != upload_id:
            raise Refused(403, "the upload token is for another upload")
        return upload_id

    def _describe(self, upload: UploadSession, response: Response) -> Response:
        response.headers["Upload-Length"] = str(upload.size)
        response.headers["Cache-Control"] = "no-store"
        expires_at = self.uploads.expires_at(upload)
        if expires_at is not None and upload.status in UPLOAD_OPEN:
            response.headers["Upload-Expires"] = http_date(expires_at.replace(tzinfo=UTC))
        response.headers["Upload-Metadata"] = _format_metadata(
            {"filename": upload.original_name, "filetype": upload.mime_type}
        )
        return response

    def finish(self, response: Response, status: int | None = None) -> Response:
        if status is not None:
            response.status_code = status
        if response.status_code == 204 or not response.response:
            # An explicit empty body: without a length the server would send a chunked
            # terminator after a 204, which a keep-alive client reads as its next response.
            response.headers.pop("Content-Type", None)
            response.headers["Content-Length"] = "0"
        response.headers["Tus-Resumable"] = TUS_VERSION
        response.headers["Access-Control-Allow-Origin"] = self.cors_origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if self.cors_origin != "*":
            response.headers["Vary"] = "Origin"
        return response

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        response = Response(message + "\n", status=status, mimetype="text/plain")
        response.headers["Cache-Control"] = "no-store"
        response.headers.update(headers or {})
        return self.finish(response)

    def serve(
        self,
        request: Request,
        upload_id: str | None,
        boundary: Callable[[], AbstractContextManager[None]],
    ) -> Response:
        """Answer one request: contract errors with their tus status, a defect with 500."""
        try:
            with boundary():
                return self.handle(request, upload_id)
        except MediaError as exc:
            return self.error_for(request, exc)
        except Exception:
            log.exception("tus request failed for upload %s", upload_id)
            return self.error(500, "the upload could not be handled; retry later")

    def error_for(self, request: Request, exc: MediaError) -> Response:
        status = next((code for kind, code in TUS_STATUS if isinstance(exc, kind)), None)
        status = status or http_status(exc)
        headers = {}
        if isinstance(exc, OffsetMismatch):
            headers["Upload-Offset"] = str(exc.expected)
        if request.environ.get(BODY_LEFT_UNREAD):
            headers["Connection"] = "close"
        return self.error(status, str(exc), headers)


def _header_int(request: Request, name: str, required: bool) -> Any:
    value = request.headers.get(name)
    if value is None:
        if required:
            raise Refused(400, f"the {name} header is required")
        return None
    if not value.isdigit() or len(value) > 19:
        raise Refused(400, f"{name} must be a whole number of bytes")
    return int(value)


def _has_body(request: Request) -> bool:
    chunked = request.headers.get("Transfer-Encoding", "").lower() == "chunked"
    return chunked or bool(request.headers.get("Content-Length", "0").strip("0"))


def _parse_checksum(value: str | None) -> tuple[str, bytes] | None:
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm.lower() not in SUPPORTED_CHECKSUMS:
        raise Refused(400, f"checksum algorithm {algorithm!r} is not one of {SUPPORTED_CHECKSUMS}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, "Upload-Checksum must be '<algorithm> <base64 digest>'") from None
    return algorithm.lower(), digest


def _parse_metadata(value: str | None) -> dict[str, str | None]:
    """``key base64value, key2, ...`` as the creation extension defines it."""
    metadata: dict[str, str | None] = {}
    for pair in (value or "").split(","):
        if not pair.strip():
            continue
        key, _, encoded = pair.strip().partition(" ")
        if not key or " " in encoded.strip():
            raise Refused(400, "Upload-Metadata must be 'key base64value' pairs, comma-separated")
        try:
            metadata[key] = base64.b64decode(encoded, validate=True).decode() if encoded else None
        except (binascii.Error, ValueError):
            raise Refused(400, f"Upload-Metadata value of {key!r} is not base64") from None
    return metadata


def _format_metadata(values: dict[str, str | None]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}"
        for key, value in values.items()
        if value
    )


def _stop_reading(request: Request) -> None:
    """Leave the rest of a refused body unread: by default the server would read it all (to
    keep the connection), so a client lying about its size would still send every byte."""
    body: Any = request.environ.get("wsgi.input")
    if hasattr(body, "position") and hasattr(body, "content_length"):
        body.chunked_input = False
        body.content_length = body.position
        request.environ[BODY_LEFT_UNREAD] = True
