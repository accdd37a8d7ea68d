"""URLs handed to clients, and the check of the signed ones when they come back.

Public media have a stable URL on the service's HTTP endpoint. Private media get a link that
expires: on S3 a presigned URL, elsewhere a URL on the service's own endpoint carrying the expiry,
a key id and an HMAC-SHA256 over method, id, variant, disposition and expiry.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from services.media.core.ids import utcnow
from services.media.core.models import Media
from services.media.core.settings import MediaSettings
from services.media.delivery.serving import content_disposition, content_type
from storage import PresignedReads, Storage

_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


class LinkRejected(Exception):
    """A signed link that is malformed, tampered with, signed by an unknown key, or expired."""


class TokenRejected(Exception):
    """An upload token that is malformed, tampered with, for another upload, or expired."""


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: datetime | None  # naive UTC; None for links that do not expire


def _epoch(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp())


class MediaUrls:
    def __init__(self, settings: MediaSettings, storage: Storage) -> None:
        self._settings = settings
        self._storage = storage
        self._base = settings.public_base_url
        self._key_id = settings.url_signing_key_id
        self._quoted_key_id = quote(settings.url_signing_key_id, safe="")
        # Whether the backend can presign at all: if not, links skip working out the headers a
        # presigned URL would carry (most of the cost of a link, and a page has ~100 of them).
        self._presigner = storage if isinstance(storage, PresignedReads) else None

    def for_media(self, media: Media, now: datetime | None = None, variant: str = "") -> str:
        """The ``url`` of a record, or of one of its variants."""
        if media.external_url:
            return media.external_url
        if media.is_public:
            return self.public(media.id, variant)
        return self.link(media, self._settings.private_url_ttl, variant=variant, now=now).url

    def public(self, media_id: str, variant: str = "") -> str:
        url = f"{self._base}/files/{_quoted(media_id)}"
        return f"{url}?variant={_quoted(variant)}" if variant else url

    def link(
        self,
        media: Media,
        expires_in: timedelta,
        *,
        download: bool = False,
        variant: str = "",
        now: datetime | None = None,
    ) -> Link:
        """A time-limited link to the bytes, whatever the media's visibility."""
        if media.external_url:
            return Link(media.external_url, None)
        expires_at = (now or utcnow()) + expires_in
        if self._presigner is not None and media.storage_key and not variant:
            presigned = self._presigner.presigned_get_url(
                media.storage_key,
                int(expires_in.total_seconds()),
                content_type=content_type(media.mime_type),
                disposition=content_disposition(media.original_name, media.mime_type, download),
            )
            if presigned:
                return Link(presigned, expires_at)
        expires = _epoch(expires_at)
        signature = sign(
            self._settings.url_signing_key,
            media.id,
            variant,
            requested_disposition(download),
            expires,
        )
        query = f"expires={expires}&kid={self._quoted_key_id}&signature={signature}"
        if download:
            query += "&download=1"
        if variant:
            query += f"&variant={_quoted(variant)}"
        return Link(f"{self.public(media.id)}?{query}", expires_at)

    def upload_token(self, upload_id: str, now: datetime | None = None) -> Link:
        """A bearer token for the HTTP (tus) side of one upload session, and when it expires.

        ``{uploadId}.{expires}.{kid}.{hmac}``: checked without the database, and useless for
        anything but that one upload (the HMAC covers a different message than links do).
        """
        expires_at = (now or utcnow()) + self._settings.upload_token_ttl
        expires = _epoch(expires_at)
        signature = sign_upload(self._settings.url_signing_key, upload_id, expires)
        return Link(f"{upload_id}.{expires}.{self._key_id}.{signature}", expires_at)

    def verify_upload_token(self, token: str, now: datetime | None = None) -> str:
        """The upload id the token was issued for; :class:`TokenRejected` if it is not valid."""
        try:
            upload_id, expires, key_id, signature = token.split(".")
            expires_at = int(expires)
        except ValueError:
            raise TokenRejected("the upload token is malformed") from None
        key = self._settings.signing_keys.get(key_id)
        now_epoch = _epoch(now or utcnow())
        if key is None or (
            key.accepted_until is not None and now_epoch > key.accepted_until.timestamp()
        ):
            raise TokenRejected("the upload token was signed with an unknown key")
        if not hmac.compare_digest(sign_upload(key.secret, upload_id, expires_at), signature):
            raise TokenRejected("the upload token's signature does not match")
        if now_epoch > expires_at:
            raise TokenRejected("the upload token has expired; ask for a new one")
        return upload_id

    def verify(
        self,
        media_id: str,
        *,
        expires: str | None,
        key_id: str | None,
        signature: str | None,
        download: bool,
        variant: str = "",
        now: datetime | None = None,
    ) -> None:
        """Raise :class:`LinkRejected` unless the link was signed by us for exactly this."""
        if not expires or not key_id or not signature:
            raise LinkRejected("the link is not signed")
        try:
            expires_at = int(expires)
        except ValueError:
            raise LinkRejected("the link's expiry is not a number") from None
        now_epoch = _epoch(now or utcnow())
        key = self._settings.signing_keys.get(key_id)
        if key is None:
            raise LinkRejected("the link was signed with an unknown key")
        if key.accepted_until is not None and now_epoch > key.accepted_until.timestamp():
            raise LinkRejected("the link was signed with a retired key")
        expected = sign(key.secret, media_id, variant, requested_disposition(download), expires_at)
        if not hmac.compare_digest(expected, signature):
            raise LinkRejected("the link's signature does not match")
        if now_epoch > expires_at:
            raise LinkRejected("the link has expired")
        if expires_at - now_epoch > self._settings.max_url_ttl.total_seconds():
            raise LinkRejected("the link claims a lifetime longer than links may have")


def _quoted(value: str) -> str:
    # Ids and variant names are URL-safe already (UUIDs, [A-Za-z0-9_-]); quote anything else.
    return value if _URL_SAFE.fullmatch(value) else quote(value, safe="")


def requested_disposition(download: bool) -> str:
    """What the link asks for. The served disposition may be stricter (unsafe types are always
    attachments); signing the request alone lets a link be checked before the database is."""
    return "attachment" if download else "inline"


def sign(secret: bytes, media_id: str, variant: str, disposition: str, expires: int) -> str:
    message = "\n".join(["GET", media_id, variant, disposition, str(expires)]).encode()
    return _mac(secret, message)


def sign_upload(secret: bytes, upload_id: str, expires: int) -> str:
    message = "\n".join(["UPLOAD", upload_id, str(expires)]).encode()
    return _mac(secret, message)


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


def _mac(secret: bytes, message: bytes) -> str:
    """HMAC-SHA256 from a copy of a keyed state: a page of records signs ~100 links, and keying
    a new HMAC each time cost more than the hashing."""
    mac = _keyed(secret).copy()
    mac.update(message)
    return mac.hexdigest()
