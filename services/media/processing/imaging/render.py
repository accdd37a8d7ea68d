"""Rendering plans: which stored pixels to resample to which size, from one decode.

Sizes and boxes arrive in displayed (post-orientation) pixels; a :class:`_Plan` holds them in
stored pixels, so the image is shrunk in its stored orientation (cheaper) and transposed after,
exactly like ``ImageOps.exif_transpose`` would. A JPEG is decoded with ``Image.draft`` at the
smallest DCT scale that still gives the pixels the largest plan needs (:data:`DRAFT_GAP`), and
each plan is resampled from the smallest already-rendered image that is still large enough.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

from PIL import ExifTags, Image, ImageFile

from services.media.processing.imaging.colour import _canonical
from services.media.processing.imaging.gate import _PILLOW_ERRORS, _decoding, _Opened
from services.media.processing.imaging.recipes import Fit

RESAMPLE: Final = Image.Resampling.LANCZOS
# A JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that is still at least this many
# times the output. Scaling in the DCT is itself a good low-pass filter: on the bench photo a 1/2
# decode plus Lanczos is within 41.5 dB PSNR of a full decode plus Lanczos (1/8 for a thumbnail:
# 49 dB), far above what WebP at q80 keeps, for half the time. (Image.thumbnail uses 2.)
DRAFT_GAP: Final = 1.0
# As Image.thumbnail: Image.reduce (a box filter) by whole factors only down to twice the output,
# then Lanczos for the rest.
REDUCING_GAP: Final = 2.0

_ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG", "AVIF"})
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# The same table as ImageOps.exif_transpose.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

Box: TypeAlias = tuple[float, float, float, float]


@dataclass(frozen=True)
class _Plan:
    """Resample ``region`` (stored, full-resolution pixels) to ``size`` (stored orientation)."""

    region: Box
    size: tuple[int, int]
    whole: bool  # the region is the whole image

    @property
    def scale(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.region
        return self.size[0] / (x1 - x0), self.size[1] / (y1 - y0)


@dataclass
class _Source:
    """An opened image and what is known about it before (JPEG) or after (others) decoding."""

    image: ImageFile.ImageFile
    format: str
    mode: str
    stored_size: tuple[int, int]
    frame_count: int
    animated: bool
    orientation: int | None
    icc: bytes | None
    has_alpha: bool

    @property
    def displayed_size(self) -> tuple[int, int]:
        width, height = self.stored_size
        return (height, width) if self.orientation in _SWAPS_AXES else (width, height)

    def plan(self, region: Box, size: tuple[int, int]) -> _Plan:
        """A plan from a displayed region and output size."""
        width, height = self.stored_size
        x0, y0 = _stored_point(region[0], region[1], width, height, self.orientation)
        x1, y1 = _stored_point(region[2], region[3], width, height, self.orientation)
        stored_region = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if self.orientation in _SWAPS_AXES:
            size = (size[1], size[0])
        return _Plan(stored_region, size, stored_region == (0, 0, width, height))

    def fit(self, width: int | None, height: int | None, fit: Fit) -> _Plan:
        shown_w, shown_h = self.displayed_size
        if fit is Fit.COVER and width is not None and height is not None:
            scale = max(width / shown_w, height / shown_h)
            if scale <= 1:
                size = (width, height)
                region_w, region_h = width / scale, height / scale
            else:  # never enlarge: each side is the smaller of the box's and the image's
                size = (min(width, shown_w), min(height, shown_h))
                region_w, region_h = size
            x0, y0 = (shown_w - region_w) / 2, (shown_h - region_h) / 2
            if region_w == shown_w:
                x0 = 0
            if region_h == shown_h:
                y0 = 0
            if size == (region_w, region_h):  # no scaling: a whole-pixel crop
                x0, y0 = math.floor(x0), math.floor(y0)
            return self.plan((x0, y0, x0 + region_w, y0 + region_h), size)
        return self.plan((0, 0, shown_w, shown_h), _inside((shown_w, shown_h), width, height))


def _stored_point(
    x: float, y: float, width: int, height: int, orientation: int | None
) -> tuple[float, float]:
    """The stored-image point shown at displayed point (x, y) under an EXIF orientation."""
    match orientation:
        case 2:
            return width - x, y
        case 3:
            return width - x, height - y
        case 4:
            return x, height - y
        case 5:
            return y, x
        case 6:
            return y, height - x
        case 7:
            return width - y, height - x
        case 8:
            return width - y, x
        case _:
            return x, y


def _inside(size: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """``size`` shrunk (never enlarged) to fit in width x height; None is unbounded."""
    w, h = size
    scale = min(1.0, width / w if width else 1.0, height / h if height else 1.0)
    if scale >= 1:
        return w, h
    return max(1, min(width or w, round(w * scale))), max(1, min(height or h, round(h * scale)))


def _inspect(opened: _Opened) -> _Source:
    """Frames, orientation, alpha and ICC; decodes every format except JPEG, which waits for
    its draft scale."""
    image = opened.image
    fmt = "JPEG" if image.format == "MPO" else str(image.format)
    with _decoding():
        # Before decoding: counting GIF frames seeks, which drops a decoded first frame.
        frames = 1 if fmt == "JPEG" else int(getattr(image, "n_frames", 1))
        if fmt != "JPEG":
            image.load()
    icc = image.info.get("icc_profile")
    return _Source(
        image=image,
        format=fmt,
        mode=image.mode,
        stored_size=image.size,
        frame_count=frames,
        animated=frames > 1 and fmt in _ANIMATED_FORMATS,
        orientation=_orientation(image),
        icc=icc if isinstance(icc, bytes) and icc else None,
        has_alpha=image.has_transparency_data,
    )


def _orientation(image: Image.Image) -> int | None:
    """The EXIF (or XMP) orientation; a damaged EXIF block counts as none."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation)
    except (*_PILLOW_ERRORS, ArithmeticError):
        return None
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8
        else None
    )


def _decode(src: _Source, need: tuple[int, int] | None) -> tuple[Image.Image, float, float]:
    """Decode, a JPEG at the smallest DCT scale that still gives ``need`` (stored) pixels.

    Returns the image and its pixels per stored pixel across and down (below 1 after a draft).
    """
    image = src.image
    width, height = src.stored_size
    factor_x = factor_y = 1.0
    if need is not None and src.format == "JPEG":
        with _decoding():
            drafted = image.draft(None, need)
        if drafted is not None:
            # The box the scaled decode covers, in its own pixels: (0, 0, width/s, height/s).
            box = drafted[1]
            factor_x, factor_y = box[2] / width, box[3] / height
    with _decoding():
        image.load()
    return image, factor_x, factor_y


class _Renderer:
    """Resamples plans from one decode, each from the smallest source that is large enough."""

    def __init__(self, src: _Source, plans: Iterable[_Plan]) -> None:
        width, height = src.stored_size
        need = None
        plans = list(plans)
        if plans:
            scale_x = max(plan.scale[0] for plan in plans)
            scale_y = max(plan.scale[1] for plan in plans)
            need = (
                math.ceil(width * scale_x * DRAFT_GAP),
                math.ceil(height * scale_y * DRAFT_GAP),
            )
            if need[0] >= width or need[1] >= height:
                need = None
        decoded, factor_x, factor_y = _decode(src, need)
        # Resampled and encoded from here on in a working mode; the profile follows the pixels
        # (a converted CMYK image no longer carries its CMYK profile).
        working, src.icc = _canonical(decoded, src.icc)
        # Each source with its pixels per stored pixel, across and down.
        self._sources = [(working, factor_x, factor_y)]
        self._stored_size = (width, height)

    def render(self, plan: _Plan) -> Image.Image:
        scale_x, scale_y = plan.scale
        usable = [s for s in self._sources if s[1] >= scale_x - 1e-9 and s[2] >= scale_y - 1e-9]
        image, fx, fy = min(usable or self._sources[:1], key=lambda s: s[0].width * s[0].height)
        x0, y0, x1, y1 = plan.region
        box = (
            max(0.0, x0 * fx),
            max(0.0, y0 * fy),
            min(float(image.width), x1 * fx),
            min(float(image.height), y1 * fy),
        )
        if _whole_pixels(box) and (round(box[2] - box[0]), round(box[3] - box[1])) == plan.size:
            whole = (round(box[0]), round(box[1]), round(box[2]), round(box[3]))
            result = image if whole == (0, 0, *image.size) else image.crop(whole)
        else:
            result = image.resize(plan.size, RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
        if plan.whole:
            width, height = self._stored_size
            self._sources.append((result, result.width / width, result.height / height))
        return result


def _whole_pixels(box: Box) -> bool:
    return all(abs(v - round(v)) < 1e-6 for v in box)


def _transpose(image: Image.Image, orientation: int | None) -> Image.Image:
    method = _TRANSPOSE.get(orientation or 1)
    return image if method is None else image.transpose(method)


def _output_format(requested: str, src: _Source) -> str:
    if requested != "ORIGINAL":
        return requested
    if src.format in ("JPEG", "WEBP", "PNG"):
        return src.format
    if src.format in ("GIF", "BMP") or src.has_alpha:
        return "PNG"
    return "JPEG"
