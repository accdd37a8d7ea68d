"""URLs handed to clients, and the check of the signed ones when they come back.

Public media have a stable URL on the service's HTTP endpoint. Private media get a link that
expires: on S3 a presigned URL, elsewhere a URL on the service's own endpoint carrying the expiry,
a key id and an HMAC-SHA256 over method, id, variant, disposition and expiry.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from services.media.ids import utcnow
from services.media.models import Media
from services.media.serving import content_disposition, content_type
from services.media.settings import MediaSettings
from storage import Storage


class LinkRejected(Exception):
    """A signed link that is malformed, tampered with, signed by an unknown key, or expired."""


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

    def for_media(self, media: Media, now: datetime | None = None) -> str:
        """The ``url`` of a record."""
        if media.external_url:
            return media.external_url
        if media.is_public:
            return self.public(media.id)
        return self.link(media, self._settings.private_url_ttl, now=now).url

    def public(self, media_id: str) -> str:
        return f"{self._base}/files/{quote(media_id, safe='')}"

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
        if media.storage_key and not variant:
            presigned = self._storage.presigned_get_url(
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
            query += f"&variant={quote(variant, safe='')}"
        return Link(f"{self.public(media.id)}?{query}", expires_at)

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


def requested_disposition(download: bool) -> str:
    """What the link asks for. The served disposition may be stricter (unsafe types are always
    attachments); signing the request alone lets a link be checked before the database is."""
    return "attachment" if download else "inline"


def sign(secret: bytes, media_id: str, variant: str, disposition: str, expires: int) -> str:
    message = "\n".join(["GET", media_id, variant, disposition, str(expires)]).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
