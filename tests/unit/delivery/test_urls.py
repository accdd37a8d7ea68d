"""URLs in records and from getUrl, and the check of signed links (key rotation included)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from services.media.core.ids import utcnow
from services.media.core.models import Media
from services.media.core.settings import SigningKey
from services.media.delivery.urls import LinkRejected, MediaUrls, TokenRejected, sign

NOW = datetime(2026, 11, 21, 10, 0, 0)


def _media(**fields):
    values = {
        "id": "0193-abc",
        "is_public": False,
        "external_url": None,
        "storage_key": "media/x",
        "mime_type": "image/png",
        "original_name": "cat.png",
    }
    return Media(**(values | fields))


def _query(url):
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def _verify(urls, media, url, now=NOW, **changes):
    query = _query(url) | changes
    urls.verify(
        media.id,
        expires=query.get("expires"),
        key_id=query.get("kid"),
        signature=query.get("signature"),
        download=query.get("download") == "1",
        variant=query.get("variant", ""),
        now=now,
    )


def test_public_media_have_a_stable_url(settings, storage):
    url = MediaUrls(settings, storage).for_media(_media(id="m1", is_public=True))
    assert url == "http://localhost:8000/files/m1"


def test_private_media_have_a_signed_expiring_url(settings, storage):
    url = MediaUrls(settings, storage).for_media(_media(), now=NOW)
    assert urlsplit(url).path == "/files/0193-abc"
    query = _query(url)
    expires = int(NOW.replace(tzinfo=UTC).timestamp()) + 3600
    assert query["expires"] == str(expires)
    assert query["kid"] == settings.url_signing_key_id
    message = f"GET\n0193-abc\n\ninline\n{expires}".encode()
    expected = hmac.new(settings.url_signing_key, message, hashlib.sha256).hexdigest()
    assert query["signature"] == expected


def test_external_media_keep_their_url(settings, storage):
    media = _media(external_url="https://cdn.example.com/a.mp4", storage_key=None)
    assert MediaUrls(settings, storage).for_media(media) == "https://cdn.example.com/a.mp4"


def test_a_signed_link_verifies_until_it_expires(settings, storage):
    urls = MediaUrls(settings, storage)
    media = _media()
    link = urls.link(media, timedelta(seconds=60), now=NOW)
    assert link.expires_at == NOW + timedelta(seconds=60)
    _verify(urls, media, link.url)
    _verify(urls, media, link.url, now=NOW + timedelta(seconds=60))
    with pytest.raises(LinkRejected, match="expired"):
        _verify(urls, media, link.url, now=NOW + timedelta(seconds=61))


def test_any_change_to_a_link_breaks_it(settings, storage):
    urls = MediaUrls(settings, storage)
    media = _media()
    url = urls.link(media, timedelta(hours=1), now=NOW).url
    query = _query(url)
    flipped = query["signature"][:-1] + ("0" if query["signature"][-1] != "0" else "1")
    for changes, reason in [
        ({"signature": flipped}, "does not match"),
        ({"expires": str(int(query["expires"]) + 1)}, "does not match"),
        ({"download": "1"}, "does not match"),
        ({"variant": "thumbnail"}, "does not match"),
        ({"kid": "k9"}, "unknown key"),
        ({"expires": "soon"}, "not a number"),
        ({"signature": None}, "not signed"),
    ]:
        with pytest.raises(LinkRejected, match=reason):
            _verify(urls, media, url, **changes)
    with pytest.raises(LinkRejected, match="does not match"):
        _verify(urls, _media(id="0193-abd"), url)


def test_download_links_are_attachments(settings, storage):
    urls = MediaUrls(settings, storage)
    media = _media()
    url = urls.link(media, timedelta(hours=1), download=True, now=NOW).url
    assert _query(url)["download"] == "1"
    _verify(urls, media, url)


def test_a_rotated_key_is_accepted_until_its_grace_ends(settings, storage):
    old = MediaUrls(settings, storage)
    media = _media()
    url = old.link(media, timedelta(days=7), now=NOW).url
    rotated = replace(
        settings,
        url_signing_key=b"a-brand-new-key",
        url_signing_key_id="k2",
        previous_signing_key=SigningKey(
            settings.url_signing_key_id,
            settings.url_signing_key,
            accepted_until=(NOW + timedelta(days=7)).replace(tzinfo=UTC),
        ),
    )
    urls = MediaUrls(rotated, storage)
    _verify(urls, media, url, now=NOW + timedelta(days=1))
    with pytest.raises(LinkRejected, match="retired key"):
        _verify(urls, media, url, now=NOW + timedelta(days=7, seconds=1))
    new_url = urls.link(media, timedelta(hours=1), now=NOW).url
    assert _query(new_url)["kid"] == "k2"
    _verify(urls, media, new_url)
    with pytest.raises(LinkRejected, match="unknown key"):
        _verify(old, media, new_url)


def test_a_link_longer_than_the_longest_lifetime_is_refused(settings, storage):
    """Even correctly signed (a leaked key, an old bug): no link outlives 7 days."""
    urls = MediaUrls(settings, storage)
    media = _media()
    url = urls.link(media, timedelta(days=8), now=NOW).url
    with pytest.raises(LinkRejected, match="longer than links may have"):
        _verify(urls, media, url)
    _verify(urls, media, urls.link(media, timedelta(days=7), now=NOW).url)


def test_upload_tokens_name_one_upload_and_expire(settings, storage):
    urls = MediaUrls(settings, storage)
    now = utcnow()
    token = urls.upload_token("up-1", now=now)
    assert token.expires_at == now + settings.upload_token_ttl
    assert urls.verify_upload_token(token.url, now=now) == "up-1"
    upload_id, expires, key_id, signature = token.url.split(".")
    for forged in (
        f"up-2.{expires}.{key_id}.{signature}",
        f"{upload_id}.{int(expires) + 60}.{key_id}.{signature}",
        f"{upload_id}.{expires}.other.{signature}",
        "not-a-token",
    ):
        with pytest.raises(TokenRejected):
            urls.verify_upload_token(forged, now=now)
    with pytest.raises(TokenRejected, match="expired"):
        urls.verify_upload_token(token.url, now=now + settings.upload_token_ttl + timedelta(1))
    # A signed link to a file is no upload token, and the other way round.
    link_signature = sign(settings.url_signing_key, "up-1", "", "inline", int(expires))
    with pytest.raises(TokenRejected):
        urls.verify_upload_token(f"{upload_id}.{expires}.{key_id}.{link_signature}", now=now)
