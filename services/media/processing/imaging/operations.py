"""Image processing for media: facts, placeholders, variants, crops and re-encoding.

Pure, synchronous CPU work on a file path, bytes or a binary file object; results are plain
dataclasses and encoded bytes written to a binary file object the caller provides (so they can be
streamed to storage). Nothing here touches nameko, the database or storage; callers run these
functions in a thread pool (``eventlet.tpool``), where Pillow releases the GIL while it decodes,
resamples and encodes.

Decoding policy (every entry point goes through it):

* Pillow is only ever called as ``Image.open(fp, formats=limits.formats)``: the decoders of
  :data:`PILLOW_FORMATS` (AVIF and HEIF where this machine has their decoders, see
  :data:`DECODERS`) are the only code that reads untrusted bytes. EPS (Ghostscript), PDF,
  SVG and every other format Pillow knows are refused before any parser of theirs runs; SVG is
  never rasterised.
* The pixel count from the header is checked against ``limits.max_pixels`` before any pixel is
  decoded; Pillow's own decompression-bomb check (a warning turned into an error here, and an
  error at twice its limit) backs it up.
* Truncated or damaged files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set.
* Every failure to read an image is :class:`UnsupportedMediaType` with a readable message, never
  a bare Pillow exception. The plain contract class is raised on purpose: errors cross RPC by
  class name, so a subclass would reach callers as an unknown ``RemoteError``.

Memory stays bounded for JPEG, the format of nearly every large photo: it is decoded with
``Image.draft`` at the smallest DCT scale (1/2, 1/4 or 1/8) that still gives at least the pixels
the largest requested output needs (:data:`DRAFT_GAP`), so a 256 px thumbnail of a 12 MP photo
decodes 500x375 pixels (0.75 MB) instead of 4000x3000 (48 MB). The other formats have no reduced
decode and are decoded in full, which ``max_pixels`` bounds.

Outputs:

* WebP is the default output format: every current browser displays it and it is 25-35% smaller
  than JPEG at the same visual quality. A recipe may ask for JPEG or PNG, or ``ORIGINAL`` for the
  web-safe equivalent of the source (JPEG stays JPEG, WebP stays WebP, PNG, GIF and BMP become PNG,
  TIFF becomes JPEG, or PNG if it has transparency).
* Outputs carry no metadata at all: no EXIF (so no GPS position), no XMP, no comments, and no
  bytes the source carried after its image data (a ZIP/JAR or a script appended to a GIF or JPEG
  is gone, because the pixels are re-encoded). An ICC profile is kept when it matches the output
  colour space and is small (sRGB, Display P3, ...). CMYK is converted to RGB, through its
  embedded profile when it has one.
* Orientation: the EXIF orientation is read once from the source, the image is shrunk in its
  stored orientation (cheaper) and then transposed exactly like ``ImageOps.exif_transpose``
  would, so outputs are upright and need no orientation tag. (``exif_transpose`` itself is not
  called on the shrunk copy: a resized TIFF no longer carries its orientation tag.) Every size
  and crop box in this module is in displayed, post-orientation pixels.
* Alpha is kept for WebP and PNG (dropped when fully opaque) and flattened onto white for JPEG.
  Every decoded mode (16-bit, 32-bit integer and float grey, palette, bilevel, CMYK, YCbCr,
  LAB, HSV, premultiplied alpha) is brought to 8-bit L, LA, RGB or RGBA before resampling,
  by the rules of :func:`_canonical` (docs/rpc.md has the table).
* Animated GIF, WebP and PNG: facts count the frames, but variants, crops and placeholders are
  made from the first frame only (a still image), and ``optimize`` leaves animations as they are.
* Images are never enlarged. ``inside`` fits the image in the box; ``cover`` fills the box and
  crops the centre. When the source is smaller than a ``cover`` box, each side is the smaller of
  the box's and the image's, so a source smaller than the box in both directions keeps its
  dimensions.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import IO, Any, Final, TypeAlias, cast

from PIL import ExifTags, Image, ImageCms, ImageFile, UnidentifiedImageError, features

from services.media.exceptions import UnsupportedMediaType, ValidationError

__all__ = [
    "DECODED_MIME_TYPES",
    "DECODERS",
    "DEFAULT_LIMITS",
    "DEFAULT_RECIPES",
    "MAX_IMAGE_PIXELS",
    "MAX_VARIANT_SIDE",
    "MIME_TYPES",
    "OUTPUT_FORMATS",
    "PILLOW_FORMATS",
    "CropBox",
    "Fit",
    "ImageFacts",
    "ImageSource",
    "ImagingLimits",
    "OptimizeResult",
    "ProcessedImage",
    "RecipeError",
    "RenderedVariant",
    "VariantRecipe",
    "blurhash",
    "crop",
    "header_size",
    "image_facts",
    "optimize",
    "process_image",
    "recipes_from_config",
    "render_variant",
    "render_variants",
    "resize",
]


def _optional_decoders() -> dict[str, bool]:
    """AVIF (Pillow's own codec, present when Pillow was built with libavif) and HEIF (the
    pillow-heif plug-in, registered here) are decoded only where this machine has them."""
    try:
        import pillow_heif
    except ImportError:
        heif = False
    else:
        pillow_heif.register_heif_opener()
        heif = True
    return {"AVIF": features.check("avif") is True, "HEIF": heif}


DECODERS: Final = {
    name: True for name in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
} | _optional_decoders()
"""Every image decoder this service may use, and whether this machine has it."""
# Only these decoders may look at uploaded bytes; EPS, PDF, FITS and friends never run.
PILLOW_FORMATS = tuple(name for name, present in DECODERS.items() if present)
# A bigger image is a decompression bomb, rejected rather than decoded.
MAX_IMAGE_PIXELS = 50_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
"""A file path, the file's bytes, or a binary file object (read from its start)."""

OUTPUT_FORMATS: Final = ("WEBP", "JPEG", "PNG", "ORIGINAL")
MIME_TYPES: Final = {
    "WEBP": "image/webp",
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "HEIF": "image/heic",
}
# The image types this machine decodes: others that a policy admits (an operator's SVG, HEIC
# without its plug-in) are stored as they are, with no dimensions and no processing.
DECODED_MIME_TYPES: Final = frozenset(MIME_TYPES[name] for name in PILLOW_FORMATS)
# WebP's limit; the largest side a recipe may ask for.
MAX_VARIANT_SIDE: Final = 16383
# Bump when rendering changes (filters, encoder settings) so every stored variant is remade.
RENDER_VERSION: Final = 1

RESAMPLE: Final = Image.Resampling.LANCZOS
# A JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that is still at least this many
# times the output. Scaling in the DCT is itself a good low-pass filter: on the bench photo a 1/2
# decode plus Lanczos is within 41.5 dB PSNR of a full decode plus Lanczos (1/8 for a thumbnail:
# 49 dB), far above what WebP at q80 keeps, for half the time. (Image.thumbnail uses 2.)
DRAFT_GAP: Final = 1.0
# As Image.thumbnail: Image.reduce (a box filter) by whole factors only down to twice the output,
# then Lanczos for the rest.
REDUCING_GAP: Final = 2.0
# libwebp's effort (0-6). 4 is cwebp's default: 3x slower than 2 for ~5% smaller files.
WEBP_METHOD: Final = 4
# An ICC profile bigger than this is not copied into every variant; the pixels are converted
# to sRGB instead. Real display profiles (sRGB, Display P3, Adobe RGB) are 0.5-4 KB.
MAX_KEPT_ICC_BYTES: Final = 64 * 1024

FACTS_SIDE: Final = 32  # the downscale that BlurHash and the dominant colour are computed on
BLURHASH_COMPONENTS: Final = (4, 3)
LQIP_SIDES: Final = (24, 16, 8)  # tried in turn until the WebP fits LQIP_MAX_BYTES
LQIP_QUALITY: Final = 35
LQIP_MAX_BYTES: Final = 700  # raw WebP; base64 and the data: prefix keep the URI under 1000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- errors and limits ----------------------------------------------------------------------------


class RecipeError(ValueError):
    """A variant recipe (or its config block) is invalid; ``field`` names the bad setting."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ImagingLimits:
    """What an image may be before any of it is decoded."""

    max_pixels: int = MAX_IMAGE_PIXELS
    formats: tuple[str, ...] = PILLOW_FORMATS

    def __post_init__(self) -> None:
        if not _is_int(self.max_pixels) or self.max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive integer, not {self.max_pixels!r}")
        pillow_limit = Image.MAX_IMAGE_PIXELS
        if pillow_limit is not None and self.max_pixels > pillow_limit:
            raise ValueError(
                f"max_pixels {self.max_pixels} is above Pillow's own bomb limit "
                f"(Image.MAX_IMAGE_PIXELS = {pillow_limit}), which would refuse such images first"
            )
        if isinstance(self.formats, str) or not self.formats:
            raise ValueError("formats must be a non-empty sequence of Pillow format names")
        formats = tuple(self.formats)
        Image.init()
        for name in formats:
            if not isinstance(name, str) or name != name.upper() or name not in Image.OPEN:
                raise ValueError(f"{name!r} is not a format Pillow can open (use upper case)")
            if name in ("EPS", "PDF"):
                raise ValueError(f"{name} must never be decoded (it runs an interpreter)")
        object.__setattr__(self, "formats", formats)


DEFAULT_LIMITS: Final = ImagingLimits()


# -- results --------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class RenderedVariant:
    """An encoded image written to the caller's file object."""

    width: int
    height: int
    format: str  # WEBP, JPEG or PNG
    mime_type: str
    size: int  # bytes written


@dataclass(frozen=True)
class ProcessedImage:
    facts: ImageFacts
    variants: dict[str, RenderedVariant]  # by recipe name


@dataclass(frozen=True)
class OptimizeResult:
    """A full-size re-encode. Only when ``improved`` were the new bytes written to ``out``."""

    format: str
    mime_type: str
    original_size: int
    optimized_size: int  # == original_size when not improved
    ratio: float  # optimized_size / original_size, rounded to 4 places; 1.0 when not improved
    improved: bool
    width: int  # as displayed: the re-encode is upright, like the original shows
    height: int
    reason: str = ""  # why the original is kept, when it is


@dataclass(frozen=True)
class CropBox:
    """A rectangle in displayed (post-orientation) pixels."""

    x: int
    y: int
    width: int
    height: int


# -- recipes --------------------------------------------------------------------------------------


class Fit(StrEnum):
    INSIDE = "inside"  # the whole image, as large as fits in the box
    COVER = "cover"  # fill the box, cropping the centre; needs both width and height


_RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_FORMAT_ALIASES = {"JPG": "JPEG"}


@dataclass(frozen=True)
class VariantRecipe:
    """How to make one variant. Sizes are in displayed pixels; images are never enlarged.

    ``format`` is WEBP, JPEG, PNG or ORIGINAL (None is read as ORIGINAL): the web-safe equivalent
    of the source format. ``quality`` applies to WebP and JPEG. Bump ``version`` to have every
    stored variant of this recipe made again.
    """

    name: str
    width: int | None = None
    height: int | None = None
    fit: Fit = Fit.INSIDE
    format: str = "WEBP"
    quality: int = 80
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _RECIPE_NAME.fullmatch(self.name):
            raise RecipeError("name", "must be 1-64 letters, digits, '-' or '_'")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 1 <= value <= MAX_VARIANT_SIDE):
                raise RecipeError(name, f"must be an integer from 1 to {MAX_VARIANT_SIDE}")
        if self.width is None and self.height is None:
            raise RecipeError("width", "width, height or both must be given")
        try:
            fit = Fit(self.fit.lower() if isinstance(self.fit, str) else self.fit)
        except ValueError:
            raise RecipeError("fit", "must be 'inside' or 'cover'") from None
        if fit is Fit.COVER and (self.width is None or self.height is None):
            raise RecipeError("fit", "'cover' needs both width and height")
        fmt = "ORIGINAL" if self.format is None else self.format
        if isinstance(fmt, str):
            fmt = _FORMAT_ALIASES.get(fmt.upper(), fmt.upper())
        if fmt not in OUTPUT_FORMATS:
            raise RecipeError("format", f"must be one of {', '.join(OUTPUT_FORMATS)}")
        if not _is_int(self.quality) or not 1 <= self.quality <= 100:
            raise RecipeError("quality", "must be an integer from 1 to 100")
        if not _is_int(self.version) or self.version < 1:
            raise RecipeError("version", "must be a positive integer")
        object.__setattr__(self, "fit", fit)
        object.__setattr__(self, "format", fmt)

    @property
    def fingerprint(self) -> str:
        """16 hex digits over every field and :data:`RENDER_VERSION`: equal recipes share it."""
        canonical = json.dumps(
            [
                RENDER_VERSION,
                self.name,
                self.width,
                self.height,
                self.fit.value,
                self.format,
                self.quality,
                self.version,
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


DEFAULT_RECIPES: Final = (
    VariantRecipe("thumbnail", 256, 256, Fit.COVER),
    VariantRecipe("small", 640, 640),
    VariantRecipe("medium", 1280, 1280),
    VariantRecipe("large", 1920, 1920),
)
"""WebP at quality 80. ``inside`` boxes are square, so they bound the longest side."""

_RECIPE_KEYS = frozenset({"width", "height", "fit", "format", "quality", "version"})


def recipes_from_config(config: Mapping[str, Any]) -> list[VariantRecipe]:
    """Recipes from a ``variants:`` config block, mapping each name to its settings::

        variants:
          thumbnail: {width: 256, height: 256, fit: cover, format: WEBP, quality: 80, version: 1}
          small: {width: 640, fit: inside}

    The block itself or a mapping holding it under ``variants`` are both accepted. Missing
    settings take :class:`VariantRecipe`'s defaults. Raises :class:`RecipeError` (a ValueError)
    whose message names the bad setting, e.g. ``variants.small.fit: must be 'inside' or 'cover'``.
    """
    if not isinstance(config, Mapping):
        raise RecipeError("variants", "must be a mapping of variant names to their settings")
    inner = config.get("variants")
    if len(config) == 1 and isinstance(inner, Mapping) and _all_mappings(inner.values()):
        config = inner
    recipes = []
    for name, settings in config.items():
        where = f"variants.{name}"
        if not isinstance(settings, Mapping):
            raise RecipeError(where, "must be a mapping of settings")
        unknown = sorted(str(key) for key in settings if key not in _RECIPE_KEYS)
        if unknown:
            raise RecipeError(
                where,
                f"unknown setting(s) {', '.join(unknown)}; "
                f"expected {', '.join(sorted(_RECIPE_KEYS))}",
            )
        try:
            recipes.append(VariantRecipe(name=name, **settings))
        except RecipeError as exc:
            field_name = where if exc.field == "name" else f"{where}.{exc.field}"
            raise RecipeError(field_name, exc.reason) from None
    return recipes


# -- public operations ----------------------------------------------------------------------------


def header_size(source: ImageSource, *, limits: ImagingLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """Stored width and height from the header alone (no pixel is decoded), through the same
    gate as every other entry point: allow-listed decoders, and the pixel limit enforced.
    Raises :class:`UnsupportedMediaType` saying why a file is refused."""
    with _open(source, limits) as opened:
        width, height = opened.image.size
    return width, height


def image_facts(source: ImageSource, *, limits: ImagingLimits = DEFAULT_LIMITS) -> ImageFacts:
    """Dimensions, format, mode, frames, orientation, dominant colour, BlurHash and LQIP.

    A JPEG is decoded at 1/8 scale, so facts of a 12 MP photo cost a fraction of a full decode.
    """
    facts = _process(source, (), {}, limits, want_facts=True).facts
    assert facts is not None  # asked for
    return facts


def render_variant(
    source: ImageSource,
    recipe: VariantRecipe,
    out: IO[bytes],
    *,
    limits: ImagingLimits = DEFAULT_LIMITS,
) -> RenderedVariant:
    """Encode one variant into ``out``. On an error ``out`` may hold partial bytes."""
    return render_variants(source, [recipe], {recipe.name: out}, limits=limits)[recipe.name]


def render_variants(
    source: ImageSource,
    recipes: Sequence[VariantRecipe],
    outs: Mapping[str, IO[bytes]],
    *,
    limits: ImagingLimits = DEFAULT_LIMITS,
) -> dict[str, RenderedVariant]:
    """Every recipe from one decode, each encoded into ``outs[recipe.name]``.

    The source is decoded once (for a JPEG at the scale the largest variant needs) and each
    variant is resampled from the smallest already-made variant that is still large enough.
    """
    return _process(source, recipes, outs, limits, want_facts=False).variants


def process_image(
    source: ImageSource,
    recipes: Sequence[VariantRecipe],
    outs: Mapping[str, IO[bytes]],
    *,
    limits: ImagingLimits = DEFAULT_LIMITS,
) -> ProcessedImage:
    """:func:`image_facts` and :func:`render_variants` from a single decode."""
    processed = _process(source, recipes, outs, limits, want_facts=True)
    assert processed.facts is not None
    return ProcessedImage(processed.facts, processed.variants)


def resize(
    source: ImageSource,
    out: IO[bytes],
    *,
    width: int | None = None,
    height: int | None = None,
    fit: Fit | str = Fit.INSIDE,
    format: str = "WEBP",
    quality: int = 80,
    limits: ImagingLimits = DEFAULT_LIMITS,
) -> RenderedVariant:
    """An ad-hoc variant; bad arguments raise :class:`ValidationError` naming the field.

    The same as :func:`render_variant` with ``VariantRecipe("resize", ...)``, whose
    ``fingerprint`` identifies repeated requests.
    """
    try:
        recipe = VariantRecipe("resize", width, height, fit, format, quality)  # type: ignore[arg-type]
    except RecipeError as exc:
        raise ValidationError.for_field(exc.field, exc.reason.capitalize() + ".") from None
    return render_variant(source, recipe, out, limits=limits)


def crop(
    source: ImageSource,
    box: CropBox | tuple[int, int, int, int],
    out: IO[bytes],
    *,
    format: str = "WEBP",
    quality: int = 80,
    max_width: int | None = None,
    max_height: int | None = None,
    limits: ImagingLimits = DEFAULT_LIMITS,
) -> RenderedVariant:
    """The ``box`` (displayed pixels) of the image, shrunk to fit ``max_width`` x ``max_height``
    if given (never enlarged). A box outside the image raises :class:`ValidationError` naming
    ``box.x``, ``box.y``, ``box.width`` or ``box.height``.
    """
    box = _checked_box(box)
    try:
        recipe = VariantRecipe(
            "crop",
            max_width if max_width is not None else MAX_VARIANT_SIDE,
            max_height if max_height is not None else MAX_VARIANT_SIDE,
            Fit.INSIDE,
            format,
            quality,
        )
    except RecipeError as exc:
        wire = {"width": "maxWidth", "height": "maxHeight"}.get(exc.field, exc.field)
        raise ValidationError.for_field(wire, exc.reason.capitalize() + ".") from None
    with _open(source, limits) as opened:
        src = _inspect(opened)
        shown_w, shown_h = src.displayed_size
        problems: dict[str, list[str]] = {}
        if box.x >= shown_w:
            problems["box.x"] = [f"Must be less than the image width ({shown_w})."]
        elif box.x + box.width > shown_w:
            problems["box.width"] = [f"x + width must be at most the image width ({shown_w})."]
        if box.y >= shown_h:
            problems["box.y"] = [f"Must be less than the image height ({shown_h})."]
        elif box.y + box.height > shown_h:
            problems["box.height"] = [f"y + height must be at most the image height ({shown_h})."]
        if problems:
            raise ValidationError.from_fields(problems)
        size = _inside((box.width, box.height), recipe.width, recipe.height)
        fmt = _output_format(recipe.format, src)
        region = (box.x, box.y, box.x + box.width, box.y + box.height)
        plan = src.plan(region, size)
        renderer = _Renderer(src, [plan])
        image = renderer.render(plan)
        return _encode(_transpose(image, src.orientation), fmt, recipe.quality, src.icc, out)


def optimize(
    source: ImageSource, out: IO[bytes], *, limits: ImagingLimits = DEFAULT_LIMITS
) -> OptimizeResult:
    """Re-encode at full size in the same format with good settings, without any metadata.

    JPEG: quality 85, optimized Huffman tables, progressive. PNG and GIF: Pillow's optimizer,
    the same palette and transparency. WebP: quality 80, or lossless again if it was lossless.
    The EXIF orientation is applied to the pixels, since the EXIF goes. When the result is not
    smaller (or the image is animated, or BMP/TIFF) nothing is written to ``out``, ``improved``
    is False and the caller keeps the original.
    """
    with _open(source, limits) as opened:
        src = _inspect(opened)
        original = opened.size
        fmt = src.format

        width, height = src.displayed_size

        def keep(reason: str) -> OptimizeResult:
            return OptimizeResult(
                fmt, MIME_TYPES[fmt], original, original, 1.0, False, width, height, reason
            )

        if src.animated:
            return keep("animated images are kept as they are")
        if fmt not in ("JPEG", "PNG", "WEBP", "GIF"):
            return keep(f"{fmt} is not re-encoded")
        image = _transpose(_decode(src, None)[0], src.orientation)
        params: dict[str, Any]
        icc = src.icc
        if fmt == "JPEG":
            image, icc = _canonical(image, icc)
            params = {"quality": 85, "optimize": True, "progressive": True}
        elif fmt == "WEBP":
            lossless = _webp_is_lossless(opened.head)
            params = {"lossless": True} if lossless else {"quality": 80}
            params["method"] = WEBP_METHOD
        else:
            params = {"optimize": True}
            if "transparency" in image.info:
                params["transparency"] = image.info["transparency"]
        icc = _icc_for(image, icc)
        if icc is not None:
            params["icc_profile"] = icc
        image.info = {}
        buffer = io.BytesIO()
        image.save(buffer, fmt, **params)
        if buffer.tell() >= original:
            return keep(f"re-encoding gave {buffer.tell()} bytes, not fewer")
        out.write(buffer.getbuffer())
        size = buffer.tell()
        return OptimizeResult(
            fmt, MIME_TYPES[fmt], original, size, round(size / original, 4), True, width, height
        )


# -- BlurHash -------------------------------------------------------------------------------------

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


# -- opening and decoding -------------------------------------------------------------------------

# What Pillow raises on a file it cannot read. Warnings are in: with warnings turned into errors
# (as under pytest) a "corrupt EXIF" warning must still end as the typed error.
_PILLOW_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    ArithmeticError,  # ZeroDivisionError and OverflowError of a header with absurd values
    Warning,
)
_TOO_MANY_PIXELS = "the image has too many pixels to be processed safely"
_TOO_MUCH_MEMORY = "the image needs more memory to decode than this service allows"


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Pillow's exceptions, as the contract's typed error."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnsupportedMediaType(_TOO_MANY_PIXELS) from None
    except MemoryError:
        raise UnsupportedMediaType(_TOO_MUCH_MEMORY) from None
    except _PILLOW_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise UnsupportedMediaType(f"the image is damaged or cannot be decoded ({reason})") from exc


@dataclass
class _Opened:
    image: ImageFile.ImageFile
    size: int  # of the whole file, in bytes
    head: bytes  # its first bytes


_HEAD_BYTES = 64 * 1024


@contextlib.contextmanager
def _open(source: ImageSource, limits: ImagingLimits) -> Iterator[_Opened]:
    """Open the header only, and refuse a file of another format or with too many pixels."""
    with contextlib.ExitStack() as stack:
        fp: IO[bytes]
        if isinstance(source, str | os.PathLike):
            # Opened here, so Pillow never sees a file name (and never picks a plugin by it).
            fp = stack.enter_context(open(source, "rb"))
        elif isinstance(source, bytes | bytearray | memoryview):
            fp = io.BytesIO(source)
        elif hasattr(source, "read"):
            fp = source if _seekable(source) else io.BytesIO(source.read())
        else:
            raise TypeError(f"expected a path, bytes or a binary file, not {type(source).__name__}")
        fp.seek(0, os.SEEK_END)
        size = fp.tell()
        fp.seek(0)
        head = fp.read(_HEAD_BYTES)
        fp.seek(0)
        if size == 0:
            raise UnsupportedMediaType("the file is empty")
        try:
            image = Image.open(fp, formats=limits.formats)
        except UnidentifiedImageError:
            raise UnsupportedMediaType(
                "the content is not an image in one of the accepted formats "
                f"({', '.join(limits.formats)})"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UnsupportedMediaType(_TOO_MANY_PIXELS) from None
        except _PILLOW_ERRORS as exc:
            raise UnsupportedMediaType(f"the image header cannot be read ({exc})") from exc
        stack.enter_context(image)
        width, height = image.size
        if width * height > limits.max_pixels:
            raise UnsupportedMediaType(
                f"the image is {width}x{height} ({width * height} pixels), over the limit of "
                f"{limits.max_pixels} pixels"
            )
        yield _Opened(image, size, head)


def _seekable(fp: Any) -> bool:
    try:
        return bool(fp.seekable())
    except (AttributeError, OSError, ValueError):
        return False


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


# -- colour ---------------------------------------------------------------------------------------

_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WORKING_MODES = frozenset({"L", "LA", "RGB", "RGBA"})


def _canonical(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """The image in 8-bit L, LA, RGB or RGBA, and the ICC profile that still describes it.

    Every step after decoding (resampling, facts, encoding) works in these four modes only:
    Pillow's resampling refuses 16-bit modes, and most encoders refuse everything else.

    * 16-bit grey (``I;16*``) is scaled by its full range, 0-65535 to 0-255 (49152 is 191).
    * 32-bit integers (``I``) within 0-65535 are 16-bit samples widened (that is how Pillow
      hands them out) and scaled the same way; beyond that range there is no standard white,
      so the image's own range, from 0 or its minimum if negative, is stretched to 0-255.
    * Floats (``F``) are scaled from their documented range 0.0-1.0, or, when values fall
      outside it, from the image's own range the same way as ``I``.
    * CMYK goes to RGB through its embedded profile when it has one, else by Pillow's formula;
      LAB, HSV and YCbCr are converted colorimetrically by Pillow. Their profile no longer
      applies to the result and is dropped.
    * Palette, bilevel and premultiplied modes are expanded; palette transparency becomes alpha.
    """
    mode = image.mode
    if "transparency" in image.info and mode in ("1", "L", "RGB", "P"):
        return image.convert("RGBA"), icc  # a colour key becomes alpha
    if mode in _WORKING_MODES:
        return image, icc
    if mode == "CMYK":
        converted = _to_srgb(image, icc, "RGB") if _icc_space(icc) == "CMYK" else None
        return (converted or image.convert("RGB")), None
    if mode in _SIXTEEN_BIT:
        return _stretched(image.convert("I"), 0, 65535), icc
    if mode in ("I", "F"):
        low, high = cast(tuple[float, float], image.getextrema())  # one band: (min, max)
        if mode == "F" and 0 <= low and high <= 1:
            return _stretched(image, 0.0, 1.0), icc
        if mode == "I" and 0 <= low and high <= 65535:
            return _stretched(image, 0, 65535), icc
        return _stretched(image, min(low, 0), high), icc
    if mode == "1":
        return image.convert("L"), icc
    if mode == "La":
        return image.convert("LA"), icc
    if mode in ("P", "PA"):
        return image.convert("RGBA" if mode == "PA" else "RGB"), icc
    if mode == "RGBa":
        return image.convert("RGBA"), icc
    return image.convert("RGB"), None  # YCbCr, LAB, HSV, RGBX: the profile no longer applies


def _stretched(image: Image.Image, low: float, high: float) -> Image.Image:
    """An ``I`` or ``F`` image with ``low``..``high`` mapped linearly to 0..255, as ``L``."""
    scale = 255 / (high - low) if high > low else 0.0
    # point() applies scale and offset in floating point; +0.5 rounds where L truncates.
    return image.point(lambda v: (v - low) * scale + 0.5).convert("L")


def _icc_space(icc: bytes | None) -> str | None:
    """The colour space an ICC profile's header declares: 'RGB', 'GRAY', 'CMYK', ..."""
    if not icc or len(icc) < 128:
        return None
    return icc[16:20].decode("latin-1").strip()


def _to_srgb(image: Image.Image, icc: bytes | None, mode: str) -> Image.Image | None:
    """``image`` converted through its embedded profile to sRGB, or None if the profile is bad."""
    if icc is None:
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return ImageCms.profileToProfile(
            image, source, target, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode=mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _icc_for(image: Image.Image, icc: bytes | None) -> bytes | None:
    """The profile worth embedding in ``image``'s output: matching its mode, and small."""
    expected = "GRAY" if image.mode in ("1", "L", "LA", "I", *_SIXTEEN_BIT) else "RGB"
    if _icc_space(icc) != expected or icc is None or len(icc) > MAX_KEPT_ICC_BYTES:
        return None
    return icc


def _for_format(
    image: Image.Image, icc: bytes | None, fmt: str
) -> tuple[Image.Image, bytes | None]:
    image, icc = _canonical(image, icc)
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    if fmt == "JPEG" and image.mode in ("RGBA", "LA"):
        image = _flatten(image)
    elif fmt == "WEBP" and image.mode in ("L", "LA"):  # WebP has no greyscale
        image = image.convert("RGB" if image.mode == "L" else "RGBA")
    if icc is not None and len(icc) > MAX_KEPT_ICC_BYTES and image.mode in ("RGB", "RGBA"):
        converted = _to_srgb(image, icc, image.mode) if _icc_space(icc) == "RGB" else None
        image, icc = (converted, None) if converted is not None else (image, None)
    return image, _icc_for(image, icc)


def _flatten(image: Image.Image) -> Image.Image:
    """RGBA or LA over white, as RGB or L."""
    mode = "L" if image.mode in ("L", "LA") else "RGB"
    if image.mode in ("L", "RGB"):
        return image
    background = Image.new(mode, image.size, 255 if mode == "L" else (255, 255, 255))
    background.paste(image.convert(mode), mask=image.getchannel("A"))
    return background


# -- encoding -------------------------------------------------------------------------------------


class _CountingWriter:
    """Forwards writes to ``out`` and counts them (Pillow only needs write and flush)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self._out, "flush", None)
        if flush is not None:
            flush()


def _encode(
    image: Image.Image, fmt: str, quality: int, icc: bytes | None, out: IO[bytes]
) -> RenderedVariant:
    image, icc = _for_format(image, icc, fmt)
    # Nothing of the source travels: Pillow's encoders fall back to image.info for ICC
    # profiles, transparency and JPEG comments.
    image.info = {}
    params: dict[str, Any] = {}
    if fmt == "WEBP":
        params = {"quality": quality, "method": WEBP_METHOD}
    elif fmt == "JPEG":
        params = {"quality": quality, "optimize": True, "progressive": True}
    if icc is not None:
        params["icc_profile"] = icc
    writer = _CountingWriter(out)
    image.save(writer, fmt, **params)  # type: ignore[arg-type]
    return RenderedVariant(image.width, image.height, fmt, MIME_TYPES[fmt], writer.count)


def _output_format(requested: str, src: _Source) -> str:
    if requested != "ORIGINAL":
        return requested
    if src.format in ("JPEG", "WEBP", "PNG"):
        return src.format
    if src.format in ("GIF", "BMP") or src.has_alpha:
        return "PNG"
    return "JPEG"


# -- facts ----------------------------------------------------------------------------------------


@dataclass
class _Processed:
    facts: ImageFacts | None
    variants: dict[str, RenderedVariant] = field(default_factory=dict)


def _process(
    source: ImageSource,
    recipes: Sequence[VariantRecipe],
    outs: Mapping[str, IO[bytes]],
    limits: ImagingLimits,
    *,
    want_facts: bool,
) -> _Processed:
    names = [recipe.name for recipe in recipes]
    if len(set(names)) != len(names):
        raise ValueError(f"recipe names must be unique, got {names}")
    missing = [name for name in names if name not in outs]
    if missing:
        raise ValueError(f"no output file for variant(s) {', '.join(missing)}")
    with _open(source, limits) as opened:
        src = _inspect(opened)
        plans = [(recipe, src.fit(recipe.width, recipe.height, recipe.fit)) for recipe in recipes]
        facts_plan = src.fit(FACTS_SIDE, FACTS_SIDE, Fit.INSIDE) if want_facts else None
        renderer = _Renderer(
            src, [plan for _, plan in plans] + ([facts_plan] if facts_plan else [])
        )
        result = _Processed(None)
        # Largest first, so each smaller one can be resampled from a larger one.
        for recipe, plan in sorted(plans, key=lambda item: -item[1].scale[0]):
            image = _transpose(renderer.render(plan), src.orientation)
            fmt = _output_format(recipe.format, src)
            result.variants[recipe.name] = _encode(
                image, fmt, recipe.quality, src.icc, outs[recipe.name]
            )
        result.variants = {name: result.variants[name] for name in names}
        if facts_plan is not None:
            small = _transpose(renderer.render(facts_plan), src.orientation)
            result.facts = _facts(src, small)
        return result


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


# -- small helpers --------------------------------------------------------------------------------


def _all_mappings(values: Iterable[object]) -> bool:
    return all(isinstance(value, Mapping) for value in values)


def _checked_box(box: CropBox | tuple[int, int, int, int]) -> CropBox:
    if not isinstance(box, CropBox):
        try:
            box = CropBox(*box)
        except TypeError:
            raise ValidationError.for_field("box", "Must be x, y, width and height.") from None
    problems: dict[str, list[str]] = {}
    for name in ("x", "y"):
        value = getattr(box, name)
        if not _is_int(value) or value < 0:
            problems[f"box.{name}"] = ["Must be an integer of at least 0."]
    for name in ("width", "height"):
        value = getattr(box, name)
        if not _is_int(value) or value < 1:
            problems[f"box.{name}"] = ["Must be an integer of at least 1."]
    if problems:
        raise ValidationError.from_fields(problems)
    return box


def _webp_is_lossless(head: bytes) -> bool:
    """Whether a WebP file's image data is VP8L (lossless), from its RIFF chunks."""
    offset = 12
    while offset + 8 <= len(head):
        kind = head[offset : offset + 4]
        if kind == b"VP8L":
            return True
        if kind == b"VP8 ":
            return False
        (length,) = struct.unpack_from("<I", head, offset + 4)
        offset += 8 + length + (length & 1)
    return False
