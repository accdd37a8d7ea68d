"""Placeholders shown while an image loads: its BlurHash and a tiny WebP (LQIP)."""

from __future__ import annotations

import base64
import io
import math
from typing import Final

from PIL import Image

from services.media.processing.imaging.recipes import _is_int

BLURHASH_COMPONENTS: Final = (4, 3)
LQIP_SIDES: Final = (24, 16, 8)  # tried in turn until the WebP fits LQIP_MAX_BYTES
LQIP_QUALITY: Final = 35
LQIP_MAX_BYTES: Final = 700  # raw WebP; base64 and the data: prefix keep the URI under 1000

_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
_SRGB_TO_LINEAR = tuple(
    v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
    for v in (i / 255 for i in range(256))
)
_BLURHASH_MAX_PIXELS = 128 * 128


def blurhash(image: Image.Image, x_components: int = 4, y_components: int = 3) -> str:
    """The BlurHash (https://blurha.sh) of ``image``, as the reference C encoder computes it.

    Meant for a small downscale: an image over 128x128 pixels is shrunk to fit 64x64 first.
    Transparent pixels count as their colour; flatten first if that matters.
    """
    if not (_is_int(x_components) and _is_int(y_components)) or not (
        1 <= x_components <= 9 and 1 <= y_components <= 9
    ):
        raise ValueError("BlurHash components must be integers from 1 to 9")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb.width * rgb.height > _BLURHASH_MAX_PIXELS:
        rgb = rgb.copy()
        rgb.thumbnail((64, 64), Image.Resampling.BOX)
    width, height = rgb.size
    linear = [_SRGB_TO_LINEAR[value] for value in rgb.tobytes()]
    # The basis is separable: sum each row against cos(x) first, then the rows against cos(y).
    row_sums = []
    for i in range(x_components):
        cos_x = [math.cos(math.pi * i * x / width) for x in range(width)]
        sums = []
        for y in range(height):
            row = y * width * 3
            r = g = b = 0.0
            for x, c in enumerate(cos_x):
                k = row + 3 * x
                r += c * linear[k]
                g += c * linear[k + 1]
                b += c * linear[k + 2]
            sums.append((r, g, b))
        row_sums.append(sums)
    factors = []
    for j in range(y_components):
        cos_y = [math.cos(math.pi * j * y / height) for y in range(height)]
        for i in range(x_components):
            scale = (1 if i == j == 0 else 2) / (width * height)
            sums = row_sums[i]
            factors.append(
                tuple(
                    scale * sum(c * s[channel] for c, s in zip(cos_y, sums, strict=True))
                    for channel in range(3)
                )
            )
    dc, ac = factors[0], factors[1:]
    parts = [_base83((x_components - 1) + (y_components - 1) * 9, 1)]
    if ac:
        actual = max(abs(value) for factor in ac for value in factor)
        quantised = int(max(0, min(82, math.floor(actual * 83 - 0.5))))
        maximum = (quantised + 1) / 83
        parts.append(_base83(quantised, 1))
    else:
        maximum = 1.0
        parts.append(_base83(0, 1))
    r, g, b = (_linear_to_srgb(value) for value in dc)
    parts.append(_base83((r << 16) + (g << 8) + b, 4))
    for factor in ac:
        qr, qg, qb = (
            int(max(0, min(18, math.floor(_sign_pow(value / maximum, 0.5) * 9 + 9.5))))
            for value in factor
        )
        parts.append(_base83(qr * 19 * 19 + qg * 19 + qb, 2))
    return "".join(parts)


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[(value // 83 ** (length - 1 - i)) % 83] for i in range(length))


def _linear_to_srgb(value: float) -> int:
    v = max(0.0, min(1.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _sign_pow(value: float, exponent: float) -> float:
    return math.copysign(abs(value) ** exponent, value)


def _lqip(small: Image.Image) -> str:
    """A tiny WebP (alpha kept) as a data: URI, a few hundred bytes."""
    if small.mode in ("L", "LA"):
        small = small.convert("RGB" if small.mode == "L" else "RGBA")
    data = b""
    for side in LQIP_SIDES:
        tiny = small.copy()
        tiny.thumbnail((side, side), Image.Resampling.LANCZOS)
        tiny.info = {}
        buffer = io.BytesIO()
        tiny.save(buffer, "WEBP", quality=LQIP_QUALITY, method=6)
        data = buffer.getvalue()
        if len(data) <= LQIP_MAX_BYTES:
            break
    return "data:image/webp;base64," + base64.b64encode(data).decode("ascii")
