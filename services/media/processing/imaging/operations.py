"""The public operations: facts, variants, ad-hoc resizes, crops and optimized re-encodes.

Each opens its source through the gate, plans in displayed pixels, renders from one decode and
encodes into the file objects the caller provides.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from services.media.exceptions import ValidationError
from services.media.processing.imaging.colour import _canonical, _icc_for
from services.media.processing.imaging.encode import WEBP_METHOD, RenderedVariant, _encode
from services.media.processing.imaging.facts import FACTS_SIDE, ImageFacts, _facts
from services.media.processing.imaging.gate import (
    DEFAULT_LIMITS,
    MIME_TYPES,
    ImageSource,
    ImagingLimits,
    _open,
)
from services.media.processing.imaging.recipes import (
    MAX_VARIANT_SIDE,
    Fit,
    RecipeError,
    VariantRecipe,
    _is_int,
)
from services.media.processing.imaging.render import (
    _decode,
    _inside,
    _inspect,
    _output_format,
    _Renderer,
    _transpose,
)


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
