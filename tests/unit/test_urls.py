"""URLs in records: stable for public media, signed and expiring for private media."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from services.media.models import Media
from services.media.urls import UrlSigner

NOW = datetime(2026, 11, 21, 10, 0, 0)


def _media(**fields):
    return Media(id="0193-abc", is_public=False, external_url=None, **fields)


def test_public_media_have_a_stable_url(settings):
    url = UrlSigner(settings).for_media(Media(id="m1", is_public=True))
    assert url == "http://localhost:8000/files/m1"


def test_private_media_have_a_signed_expiring_url(settings):
    url = UrlSigner(settings).for_media(_media(), now=NOW)
    parts = urlsplit(url)
    assert parts.path == "/files/0193-abc"
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    expires = int(NOW.replace(tzinfo=UTC).timestamp()) + 3600
    assert query["expires"] == str(expires)
    assert query["kid"] == settings.url_signing_key_id
    message = f"GET\n0193-abc\n\ninline\n{expires}".encode()
    assert (
        query["signature"]
        == hmac.new(settings.url_signing_key, message, hashlib.sha256).hexdigest()
    )


def test_external_media_keep_their_url(settings):
    media = Media(id="m1", is_public=False, external_url="https://cdn.example.com/a.mp4")
    assert UrlSigner(settings).for_media(media) == "https://cdn.example.com/a.mp4"


def test_download_and_variant_are_part_of_the_link(settings):
    signer = UrlSigner(settings)
    url = signer.signed("m1", 1800000000, variant="thumb nail", download=True)
    assert url.endswith("&download=1&variant=thumb%20nail")
    assert signer.signed("m1", 1800000000) != signer.signed("m1", 1800000000, download=True)
