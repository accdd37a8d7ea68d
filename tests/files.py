"""Real files for tests, made on the fly."""

from __future__ import annotations

import base64
import io
import os
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
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


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
