"""Variants callers ask for (resize, crop, optimize) and the regeneration of presets whose
recipe changed, over the processing job's workspace, decoding and storing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select

from services.media.catalog.records import OverCatalog
from services.media.core.identity import Caller
from services.media.core.ids import utcnow
from services.media.core.models import Media
from services.media.core.vocabulary import MediaEvent, MediaStatus, MediaType
from services.media.exceptions import Conflict, NotFound, UnsupportedMediaType, ValidationError
from services.media.processing import imaging
from services.media.processing.imaging import RenderedVariant, VariantRecipe
from services.media.processing.jobs import (
    Job,
    MediaProcessor,
    NewVariant,
    put_file,
    put_variant_row,
    variant_key,
)


class Renditions(OverCatalog):
    """Variants asked for by callers (resize, crop, optimize) and the regeneration of presets.

    A request names its result by a fingerprint of everything that shapes the bytes, so a
    repeated request returns the stored variant instead of rendering again.
    """

    def __init__(self, processor: MediaProcessor) -> None:
        super().__init__(processor.catalog)
        self.processor = processor

    def list(self, caller: Caller, media_id: str) -> list[dict[str, Any]]:
        media = self.catalog.find_one(caller, media_id)
        return [self.catalog.present_variant(media, variant) for variant in media.variants]

    def resize(self, caller: Caller, media_id: str, options: dict[str, Any]) -> dict[str, Any]:
        try:
            recipe = VariantRecipe("resize", **options)
        except imaging.RecipeError as exc:
            raise ValidationError.for_field(exc.field, exc.reason.capitalize() + ".") from None
        name = f"resize-{recipe.fingerprint}"

        def render(source: Path, out: IO[bytes]) -> RenderedVariant:
            return imaging.render_variant(source, recipe, out, limits=self.settings.image_limits)

        return self._on_demand(caller, media_id, name, recipe.fingerprint, render)

    def crop(self, caller: Caller, media_id: str, options: dict[str, Any]) -> dict[str, Any]:
        box = imaging.CropBox(options["x"], options["y"], options["width"], options["height"])
        shape = [imaging.RENDER_VERSION, *dataclasses.astuple(box)]
        shape += [options["format"], options["quality"]]
        fingerprint = hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]

        def render(source: Path, out: IO[bytes]) -> RenderedVariant:
            return imaging.crop(
                source,
                box,
                out,
                format=options["format"],
                quality=options["quality"],
                limits=self.settings.image_limits,
            )

        return self._on_demand(caller, media_id, f"crop-{fingerprint}", fingerprint, render)

    def optimize(self, caller: Caller, media_id: str) -> dict[str, Any]:
        """Re-encode the original to save bytes; the smaller file is kept as variant
        ``optimized`` (the original is never replaced)."""
        result: list[imaging.OptimizeResult] = []

        def render(source: Path, out: IO[bytes]) -> RenderedVariant:
            outcome = imaging.optimize(source, out, limits=self.settings.image_limits)
            result.append(outcome)
            if not outcome.improved:
                raise _NotImproved(outcome.reason)
            return RenderedVariant(
                outcome.width,
                outcome.height,
                outcome.format,
                outcome.mime_type,
                outcome.optimized_size,
            )

        fingerprint = f"optimized-{imaging.RENDER_VERSION}"
        try:
            variant = self._on_demand(caller, media_id, "optimized", fingerprint, render)
        except _NotImproved as kept:
            media = self.catalog.find_one(caller, media_id)
            return {
                "originalSize": media.size,
                "optimizedSize": media.size,
                "ratio": 1.0,
                "improved": False,
                "reason": str(kept),
                "variant": None,
            }
        media = self.catalog.find_one(caller, media_id)
        return {
            "originalSize": media.size,
            "optimizedSize": variant["size"],
            "ratio": round(variant["size"] / media.size, 4),
            "improved": True,
            "reason": None,
            "variant": variant,
        }

    def _on_demand(
        self,
        caller: Caller,
        media_id: str,
        name: str,
        fingerprint: str,
        render: Callable[[Path, IO[bytes]], RenderedVariant],
    ) -> dict[str, Any]:
        media = self.catalog.find_one(caller, media_id)
        self.catalog.check_acting_for(caller, media.user_id or "")
        if media.type != MediaType.IMAGE.value or media.mime_type not in imaging.DECODED_MIME_TYPES:
            raise UnsupportedMediaType(
                f"media {media_id!r} is {media.mime_type}; only images can be rendered"
            )
        if media.storage_key is None or media.status not in (
            MediaStatus.READY,
            MediaStatus.PROCESSING,
        ):
            raise Conflict(f"media {media_id!r} is {media.status}; it has no bytes to render")
        stored = next((v for v in media.variants if v.name == name), None)
        if stored is not None and stored.fingerprint == fingerprint:
            return self.catalog.present_variant(media, stored)
        key = variant_key(media.storage_key, name, fingerprint)
        with self.processor.workspace() as workdir:
            source = self.processor.original_file(media.storage_key, workdir)
            with open(workdir / "out", "wb") as out:
                rendered = self.catalog.offload(render, source, out)
            self.catalog.storage_io(
                put_file, self.catalog.storage, key, workdir / "out", rendered.mime_type
            )
        new = NewVariant(name, fingerprint, rendered, workdir / "out", key)
        with self.catalog.changing() as session:
            row = session.get(Media, media_id, with_for_update=True)
            if row is None or row.deleted_at is not None:
                raise NotFound(f"media {media_id!r} not found")
            put_variant_row(row, new)
            row.updated_at = utcnow()
            self.catalog.record_media_event(session, MediaEvent.UPDATED, row, ["variants"])
        media = self.catalog.find_one(caller, media_id)
        stored = next(v for v in media.variants if v.name == name)
        return self.catalog.present_variant(media, stored)

    def regenerate_stale(self, limit: int = 20) -> dict[str, int]:
        """Remake the preset variants whose recipe changed (or that are missing) on READY
        images, without touching the originals; ``limit`` media per call."""
        recipes = {recipe.name: recipe for recipe in self.settings.variant_recipes}
        wanted = {name: recipe.fingerprint for name, recipe in recipes.items()}
        regenerated = 0
        after = ""
        with self.catalog.sessions() as session:
            while regenerated < limit:
                batch = list(
                    session.scalars(
                        select(Media)
                        .where(
                            Media.status == MediaStatus.READY,
                            Media.type == MediaType.IMAGE.value,
                            Media.mime_type.in_(imaging.DECODED_MIME_TYPES),
                            Media.storage_key.is_not(None),
                            Media.id > after,
                        )
                        .order_by(Media.id)
                        .limit(200)
                    )
                )
                if not batch:
                    break
                after = batch[-1].id
                for media in batch:
                    have = {v.name: v.fingerprint for v in media.variants}
                    stale = [recipes[n] for n, fp in wanted.items() if have.get(n) != fp]
                    if stale:
                        self._regenerate(media, stale)
                        regenerated += 1
                        if regenerated >= limit:
                            break
        return {"regenerated": regenerated}

    def _regenerate(self, media: Media, recipes: Sequence[VariantRecipe]) -> None:
        assert media.storage_key is not None
        with self.processor.workspace() as workdir:
            source = self.processor.original_file(media.storage_key, workdir)
            outcome = self.processor.render_images(source, workdir, recipes)
            job = Job(media.id, "", media.storage_key, media.type, media.mime_type, 0)
            self.processor.store_variants(job, outcome)
        replaced = []
        with self.catalog.changing() as session:
            row = session.get(Media, media.id, with_for_update=True)
            if row is None or row.status != MediaStatus.READY:
                return
            for new in outcome.variants:
                old_key = put_variant_row(row, new)
                if old_key:
                    replaced.append(old_key)
            row.updated_at = utcnow()
            self.catalog.record_media_event(session, MediaEvent.UPDATED, row, ["variants"])
        for key in replaced:
            self.catalog.discard_object(key)


class _NotImproved(Exception):
    pass
