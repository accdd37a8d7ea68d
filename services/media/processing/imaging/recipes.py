"""Variant recipes: what to make of an image, checked before any image is opened.

A :class:`VariantRecipe` names a size, a fit, an output format and a quality; its
``fingerprint`` (over every field and :data:`RENDER_VERSION`) identifies a stored variant.
:func:`recipes_from_config` reads them from a ``variants:`` config block.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

OUTPUT_FORMATS: Final = ("WEBP", "JPEG", "PNG", "ORIGINAL")
# WebP's limit; the largest side a recipe may ask for.
MAX_VARIANT_SIDE: Final = 16383
# Bump when rendering changes (filters, encoder settings) so every stored variant is remade.
RENDER_VERSION: Final = 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class RecipeError(ValueError):
    """A variant recipe (or its config block) is invalid; ``field`` names the bad setting."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


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


def _all_mappings(values: Iterable[object]) -> bool:
    return all(isinstance(value, Mapping) for value in values)
