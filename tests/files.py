"""Real files for tests, made on the fly."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import tempfile
from typing import Any

from PIL import Image


def png_bytes(width: int = 8, height: int = 6, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def noisy_png_bytes(approx_size: int) -> bytes:
    """A PNG of random pixels, so it does not compress below ``approx_size``."""
    side = int((approx_size / 3) ** 0.5) + 1
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def pdf_bytes() -> bytes:
    """125 bytes that sniff as a PDF; it has no pages, so processing it fails."""
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def one_page_pdf_bytes() -> bytes:
    """A valid one-page PDF (Pillow writes it)."""
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buffer, "PDF")
    return buffer.getvalue()


def write_mp4_like(path: Any, size: int) -> bytes:
    """A file that sniffs as MP4 video (an ``ftyp`` box) followed by random bytes; returns its
    sha256 digest. Written in blocks, so a big one never sits in memory."""
    return _write_padded(path, b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", size)


def write_playable_mp4(path: Any, size: int) -> bytes:
    """A real two-second MP4 (made by ffmpeg) padded to ``size`` bytes with a ``free`` box of
    random bytes, which players and ffprobe skip; returns its sha256 digest."""
    with tempfile.TemporaryDirectory() as folder:
        clip = os.path.join(folder, "clip.mp4")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
             "-t", "2", "-c:v", "mpeg4", "-pix_fmt", "yuv420p", clip],
            check=True,
            timeout=60,
        )  # fmt: skip
        with open(clip, "rb") as handle:
            head = handle.read()
    box = (size - len(head)).to_bytes(4, "big") + b"free"
    return _write_padded(path, head + box, size)


def _write_padded(path: Any, head: bytes, size: int) -> bytes:
    """``head``, then random bytes up to ``size``; the sha256 digest of it all."""
    digest = hashlib.sha256(head)
    with open(path, "wb") as handle:
        handle.write(head)
        left = size - len(head)
        while left > 0:
            block = os.urandom(min(left, 4 * 1024 * 1024))
            handle.write(block)
            digest.update(block)
            left -= len(block)
    return digest.digest()


HTML_PAGE = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def upload_data(
    data: bytes | None = None, *, user_id: str = "u-1", name: str = "cat.png", **extra: Any
) -> dict[str, Any]:
    """An upload_file payload as a sibling service would send it."""
    payload: dict[str, Any] = {
        "content": b64(png_bytes() if data is None else data),
        "originalName": name,
        "userId": user_id,
    }
    payload.update(extra)
    return payload
