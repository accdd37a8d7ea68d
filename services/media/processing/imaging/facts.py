"""Facts of an image as displayed: size, aspect, format, mode, frames, colour, placeholders."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Final, cast

from PIL import Image

from services.media.processing.imaging.colour import _canonical, _flatten
from services.media.processing.imaging.gate import MIME_TYPES
from services.media.processing.imaging.placeholders import BLURHASH_COMPONENTS, _lqip, blurhash
from services.media.processing.imaging.render import _Source

FACTS_SIDE: Final = 32  # the downscale that BlurHash and the dominant colour are computed on


@dataclass(frozen=True)
class ImageFacts:
    """What an image is, as displayed (after its EXIF orientation)."""

    width: int
    height: int
    aspect_ratio: float  # width / height, rounded to 4 places
    aspect: str  # "4:3", "16:9", "3:4"; approximated with terms up to 32 when not exact
    format: str  # the Pillow format: JPEG, PNG, GIF, WEBP, BMP, TIFF
    mime_type: str
    mode: str  # the stored colour mode: RGB, RGBA, L, LA, P, CMYK, I;16, ...
    has_alpha: bool  # an alpha channel or transparent palette entries / colour key
    animated: bool
    frame_count: int  # frames of an animation, pages of a TIFF; 1 for a still image
    orientation: int | None  # the EXIF orientation (1-8), None when absent or invalid
    dominant_color: str  # "#rrggbb", transparent areas counted as white
    blurhash: str  # 4x3 components, transparent areas counted as white
    lqip: str  # a tiny WebP as a data: URI, under 1000 characters


def _facts(src: _Source, small: Image.Image) -> ImageFacts:
    width, height = src.displayed_size
    small, _ = _canonical(small, src.icc)
    opaque = _flatten(small).convert("RGB")
    return ImageFacts(
        width=width,
        height=height,
        aspect_ratio=round(width / height, 4),
        aspect=_aspect(width, height),
        format=src.format,
        mime_type=MIME_TYPES.get(src.format, f"image/{src.format.lower()}"),
        mode=src.mode,
        has_alpha=src.has_alpha,
        animated=src.animated,
        frame_count=src.frame_count,
        orientation=src.orientation,
        dominant_color=_dominant_color(opaque),
        blurhash=blurhash(opaque, *BLURHASH_COMPONENTS),
        lqip=_lqip(small),
    )


def _aspect(width: int, height: int) -> str:
    if width >= height:
        ratio = Fraction(width, height).limit_denominator(32)
        return f"{ratio.numerator}:{ratio.denominator}"
    ratio = Fraction(height, width).limit_denominator(32)
    return f"{ratio.denominator}:{ratio.numerator}"


def _dominant_color(rgb: Image.Image) -> str:
    """The colour of the most common cluster (median cut into 6 colours)."""
    quantised = rgb.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    # A palette image: each colour is its palette index.
    _, index = cast(tuple[int, int], max(quantised.getcolors() or [(1, 0)]))
    palette = quantised.getpalette() or [0, 0, 0]
    r, g, b = palette[3 * index : 3 * index + 3]
    return f"#{r:02x}{g:02x}{b:02x}"
