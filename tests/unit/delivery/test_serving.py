"""Serving rules: inline or attachment, names in headers, byte ranges, validators."""

from __future__ import annotations

import pytest

from services.media.delivery.serving import (
    ByteRange,
    RangeNotSatisfiable,
    content_disposition,
    etag,
    inline_allowed,
    requested_range,
)


@pytest.mark.parametrize(
    ("mime", "inline"),
    [
        ("image/png", True),
        ("image/jpeg", True),
        ("video/mp4", True),
        ("audio/mpeg", True),
        ("application/pdf", True),
        ("text/plain", True),
        ("text/html", False),
        ("image/svg+xml", False),
        ("application/xml", False),
        ("application/zip", False),
        ("application/octet-stream", False),
        ("application/msword", False),
    ],
)
def test_only_safe_types_are_inline(mime, inline):
    assert inline_allowed(mime) is inline
    kind = content_disposition("x", mime, download=False).split(";")[0]
    assert kind == ("inline" if inline else "attachment")
    assert content_disposition("x", mime, download=True).startswith("attachment;")


def test_names_are_encoded_per_rfc_6266():
    header = content_disposition('Résumé "final";.pdf', "application/pdf", download=True)
    assert header == (
        'attachment; filename="Resume _final__.pdf"; '
        "filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22%3B.pdf"
    )
    assert content_disposition("日本.png", "image/png", download=False).startswith(
        'inline; filename=".png"'
    )
    assert 'filename="file"' in content_disposition("日本", "image/png", download=False)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 10)),
        ("bytes=10-", ByteRange(10, 100)),
        ("bytes=-5", ByteRange(95, 100)),
        ("bytes=90-200", ByteRange(90, 100)),
        ("bytes=0-1,5-6", None),  # multi-range: the whole file
        ("items=0-1", None),
        ("garbage", None),
    ],
)
def test_ranges(header, expected):
    assert requested_range(header, 100) == expected


def test_unsatisfiable_range():
    with pytest.raises(RangeNotSatisfiable):
        requested_range("bytes=100-200", 100)


def test_etag_is_the_checksum():
    assert etag("sha256:abc") == '"sha256-abc"'
    assert etag(None) is None
