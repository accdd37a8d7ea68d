"""URLs handed to clients: stable for public media, HMAC-signed and expiring for private media."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote

from services.media.ids import utcnow
from services.media.models import Media
from services.media.settings import MediaSettings


class UrlSigner:
    def __init__(self, settings: MediaSettings) -> None:
        self._base = settings.public_base_url
        self._key = settings.url_signing_key
        self._quoted_key_id = quote(settings.url_signing_key_id, safe="")
        self._default_ttl = settings.private_url_ttl

    def for_media(self, media: Media, now: datetime | None = None) -> str:
        if media.external_url:
            return media.external_url
        path = f"{self._base}/files/{quote(media.id)}"
        if media.is_public:
            return path
        expires = int(((now or utcnow()) + self._default_ttl).replace(tzinfo=UTC).timestamp())
        return self.signed(media.id, expires)

    def signed(self, media_id: str, expires: int, variant: str = "", download: bool = False) -> str:
        disposition = "attachment" if download else "inline"
        signature = self.signature(self._key, "GET", media_id, variant, disposition, expires)
        query = f"expires={expires}&kid={self._quoted_key_id}&signature={signature}"
        if download:
            query += "&download=1"
        if variant:
            query += f"&variant={quote(variant, safe='')}"
        return f"{self._base}/files/{quote(media_id)}?{query}"

    @staticmethod
    def signature(
        key: bytes, method: str, media_id: str, variant: str, disposition: str, expires: int
    ) -> str:
        message = "\n".join([method, media_id, variant, disposition, str(expires)]).encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()
