"""Processing of stored media, off the request path: extracted facts, placeholders and variants.

A media whose bytes can tell more (images, video, audio, PDF) is created ``PROCESSING``. The job
lives on its row: a worker claims it with a compare-and-set that gives it a claim id and a lease,
works without holding a transaction, and commits the result only if it still holds the claim
(``READY`` and ``media_processed``, or ``FAILED`` with a reason and ``media_processing_failed``).
A worker that dies lets the lease run out and the next run claims the job again; the variants
it may have written are stored under keys named by the media and the recipe, so the redo writes
the same objects, and only the claim holder's commit counts. No nameko here: CPU work goes
through the catalog's ``offload`` (a thread pool under the service), external tools are green
subprocesses.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import or_, select, update

from services.media.catalog.records import MediaCatalog, OverCatalog
from services.media.core import metrics
from services.media.core.ids import utcnow, uuid7
from services.media.core.models import Media, MediaVariant
from services.media.core.vocabulary import MediaEvent, MediaStatus, MediaType
from services.media.exceptions import (
    MediaError,
)
from services.media.processing import av as probing
from services.media.processing import imaging
from services.media.processing.imaging import RenderedVariant, VariantRecipe
from storage import Storage

log = logging.getLogger(__name__)

COPY_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Job:
    media_id: str
    claim: str
    storage_key: str
    type: str
    mime_type: str
    attempts: int


@dataclass
class NewVariant:
    """A rendition made by this job, in a local file until it is stored."""

    name: str
    fingerprint: str
    rendered: RenderedVariant
    path: Path
    storage_key: str = ""


@dataclass
class Outcome:
    """What processing found; stored in one transaction with the status change."""

    facts: dict[str, Any]
    width: int | None = None
    height: int | None = None
    variants: list[NewVariant] = field(default_factory=list)


class MediaProcessor(OverCatalog):
    def __init__(self, catalog: MediaCatalog, tools: probing.ProbeTools | None = None) -> None:
        super().__init__(catalog)
        self.tools = tools or _installed_tools(catalog.settings.tool_timeout_seconds)

    # -- the queue ---------------------------------------------------------------------------

    def run_pending(self, limit: int = 10) -> int:
        """Claim up to ``limit`` jobs and process them one after the other; how many ran."""
        jobs = self.claim(limit)
        for job in jobs:
            self.process(job)
        return len(jobs)

    def claim(self, limit: int) -> list[Job]:
        now = utcnow()
        free = or_(Media.processing_lease_until.is_(None), Media.processing_lease_until < now)
        with self.catalog.sessions() as session:
            due = session.execute(
                select(
                    Media.id,
                    Media.storage_key,
                    Media.type,
                    Media.mime_type,
                    Media.processing_attempts,
                )
                .where(Media.status == MediaStatus.PROCESSING, free)
                .order_by(Media.created_at)
                .limit(limit)
            ).all()
        jobs = []
        for media_id, key, media_type, mime_type, attempts in due:
            claim = uuid7()
            with self.catalog.sessions.begin() as session:
                # A compare-and-set, so it holds on SQLite (no FOR UPDATE) as on PostgreSQL.
                taken = session.execute(
                    update(Media)
                    .where(Media.id == media_id, Media.status == MediaStatus.PROCESSING, free)
                    .values(
                        processing_claim=claim,
                        processing_lease_until=now + self.settings.processing_lease,
                        processing_attempts=Media.processing_attempts + 1,
                    )
                    .execution_options(synchronize_session=False)
                ).rowcount
            if taken == 1:
                jobs.append(Job(media_id, claim, key, media_type, mime_type, attempts + 1))
        return jobs

    # -- one job -----------------------------------------------------------------------------

    def process(self, job: Job) -> None:
        """Run one claimed job to its end: READY, FAILED, or released for a later retry.

        Three kinds of failure are told apart, because only one of them can heal:

        * the file: the decoder or a tool said the bytes are broken or unsupported (any
          :class:`MediaError` from extraction, ``MemoryError`` of a bomb). ``FAILED`` at once,
          with what the decoder said.
        * a dependency: storage or the database is away, a configured tool will not start.
          The claim is released with a backoff and the job is tried again, up to
          ``processing_max_attempts``.
        * a defect of our own code: any other exception while extracting. Another try would fail
          the same way, so ``FAILED`` at once, logged at ERROR with the traceback and counted.
        """
        try:
            with self.workspace() as workdir:
                source = self.original_file(job.storage_key, workdir)
                verdict = self._extract_or_verdict(job, source, workdir)
                if isinstance(verdict, Outcome):
                    self.store_variants(job, verdict)
        except Exception as exc:
            self._retry_later(job, exc)
            return
        if isinstance(verdict, Outcome):
            self._finish(job, verdict)
        else:
            self._fail(job, verdict)

    def _extract_or_verdict(self, job: Job, source: Path, workdir: Path) -> Outcome | str:
        """What processing found, or why the file failed; raises only for dependencies."""
        try:
            return self._extract(job, source, workdir)
        except probing.ToolUnavailable:
            raise  # the deployment's fault, not the file's
        except MediaError as exc:
            metrics.processing_failures.labels(kind="file").inc()
            return str(exc)
        except MemoryError:
            metrics.processing_failures.labels(kind="file").inc()
            return "the file needs more memory to process than this service allows"
        except Exception as exc:
            metrics.processing_failures.labels(kind="defect").inc()
            log.exception("processing media %s hit a defect", job.media_id)
            return f"the file could not be processed (internal error: {type(exc).__name__}: {exc})"

    def _retry_later(self, job: Job, exc: Exception) -> None:
        """A failure outside the file: release the claim so the job runs again after a
        backoff instead of waiting for its lease, or fail it after the last attempt."""
        metrics.processing_failures.labels(kind="dependency").inc()
        if job.attempts >= self.settings.processing_max_attempts:
            log.error("processing media %s failed %d times: %s", job.media_id, job.attempts, exc)
            self._fail(job, f"processing failed {job.attempts} times; last: {exc}")
            return
        delays = self.settings.processing_retry_delays
        delay = delays[min(job.attempts, len(delays)) - 1]
        try:
            with self.catalog.sessions.begin() as session:
                session.execute(
                    update(Media)
                    .where(Media.id == job.media_id, Media.processing_claim == job.claim)
                    .values(processing_claim=None, processing_lease_until=utcnow() + delay)
                    .execution_options(synchronize_session=False)
                )
        except Exception:
            # The database is away too: the lease runs out instead, and the job runs again then.
            log.warning("processing media %s: claim not released", job.media_id, exc_info=True)
            return
        log.warning(
            "processing media %s failed (%s); attempt %d of %d again in %s",
            job.media_id,
            exc,
            job.attempts + 1,
            self.settings.processing_max_attempts,
            delay,
        )

    def original_file(self, key: str, workdir: Path) -> Path:
        """The original as a local file: the stored file itself on local disk (a video of
        several GB is not copied), else a copy in ``workdir``."""
        path = self.catalog.storage_io(self.storage.local_path, key)
        if path is not None:
            return Path(path)
        copy = workdir / "original"
        self.catalog.storage_io(_copy_to_file, self.storage, key, copy)
        return copy

    @contextmanager
    def workspace(self) -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix="media-processing-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _extract(self, job: Job, source: Path, workdir: Path) -> Outcome:
        if job.type == MediaType.IMAGE.value:
            if job.mime_type not in imaging.DECODED_MIME_TYPES:
                return Outcome({"note": f"no decoder here for {job.mime_type}; no facts extracted"})
            return self.render_images(source, workdir, self.settings.variant_recipes)
        needed = probing.tools_for(job.mime_type)
        missing = self.tools.missing_reason(*needed)
        if job.type in (MediaType.VIDEO.value, MediaType.AUDIO.value):
            if self.tools.ffprobe is None:
                return Outcome({"note": f"{missing}; no facts extracted"})
            av = probing.probe_av(source, self.tools)
            assert av is not None
            outcome = Outcome(_camel(dataclasses.asdict(av)), av.width, av.height)
            if av.has_video and self.tools.ffmpeg is not None:
                self._with_still(outcome, "poster", workdir, probing.poster_frame, source)
            elif av.has_video:
                outcome.facts["note"] = f"{missing}; no poster frame"
            return outcome
        # A PDF: the only document type that gets here.
        if self.tools.pdfinfo is None:
            return Outcome({"note": f"{missing}; no facts extracted"})
        pdf = probing.probe_pdf(source, self.tools)
        assert pdf is not None
        outcome = Outcome(_camel(dataclasses.asdict(pdf)))
        if pdf.needs_password:
            outcome.facts["note"] = "the PDF needs a password; no preview"
        elif self.tools.pdftoppm is not None:
            self._with_still(outcome, "preview", workdir, probing.pdf_preview, source)
        else:
            outcome.facts["note"] = f"{missing}; no preview"
        return outcome

    def render_images(
        self, source: Path, workdir: Path, recipes: Sequence[VariantRecipe]
    ) -> Outcome:
        with ExitStack() as files:
            outs: dict[str, IO[bytes]] = {
                recipe.name: files.enter_context(open(workdir / recipe.name, "wb"))
                for recipe in recipes
            }
            processed = self.catalog.offload(
                functools.partial(imaging.process_image, limits=self.settings.image_limits),
                source,
                recipes,
                outs,
            )
        facts = processed.facts
        outcome = Outcome(
            _camel(dataclasses.asdict(facts)) | {"kind": "image"}, facts.width, facts.height
        )
        by_name = {recipe.name: recipe for recipe in recipes}
        for name, rendered in processed.variants.items():
            outcome.variants.append(
                NewVariant(name, by_name[name].fingerprint, rendered, workdir / name)
            )
        return outcome

    def _with_still(
        self, outcome: Outcome, name: str, workdir: Path, render: Any, source: Path
    ) -> None:
        """A poster frame or page preview, kept as a variant, and the presets made from it."""
        still = workdir / f"{name}.jpg"
        size = render(source, still, self.tools)
        if size is None:
            return
        fingerprint = f"{name}-{probing.DEFAULT_MAX_PX}"
        rendered = RenderedVariant(size[0], size[1], "JPEG", "image/jpeg", still.stat().st_size)
        outcome.variants.append(NewVariant(name, fingerprint, rendered, still))
        presets = self.render_images(still, workdir, self.settings.variant_recipes)
        outcome.variants.extend(presets.variants)
        if outcome.width is None:
            outcome.width, outcome.height = size

    def store_variants(self, job: Job, outcome: Outcome) -> None:
        for variant in outcome.variants:
            variant.storage_key = variant_key(job.storage_key, variant.name, variant.fingerprint)
            self.catalog.storage_io(
                put_file,
                self.storage,
                variant.storage_key,
                variant.path,
                variant.rendered.mime_type,
            )

    # -- results -----------------------------------------------------------------------------

    def _finish(self, job: Job, outcome: Outcome) -> None:
        replaced: list[str] = []
        with self.catalog.changing() as session:
            media = self._claimed(session, job)
            if media is None:
                return
            for new in outcome.variants:
                old_key = put_variant_row(media, new)
                if old_key:
                    replaced.append(old_key)
            media.facts = outcome.facts
            if outcome.width is not None:
                media.width, media.height = outcome.width, outcome.height
            self._release(media, MediaStatus.READY)
            self.catalog.record_media_event(session, MediaEvent.PROCESSED, media)
        for key in replaced:
            self.catalog.discard_object(key)
        log.info("processed media %s (%d variants)", job.media_id, len(outcome.variants))

    def _fail(self, job: Job, reason: str) -> None:
        with self.catalog.changing() as session:
            media = self._claimed(session, job)
            if media is None:
                return
            media.processing_error = reason
            self._release(media, MediaStatus.FAILED)
            self.catalog.record_media_event(
                session, MediaEvent.PROCESSING_FAILED, media, reason=reason
            )
        log.warning("processing media %s failed: %s", job.media_id, reason)

    @staticmethod
    def _claimed(session: Any, job: Job) -> Media | None:
        """The media, if this job still holds it (not finished, removed or taken over)."""
        media = session.get(Media, job.media_id, with_for_update=True)
        if (
            media is None
            or media.status != MediaStatus.PROCESSING
            or media.processing_claim != job.claim
        ):
            log.info("processing media %s: the job was finished or taken over", job.media_id)
            return None
        return media

    @staticmethod
    def _release(media: Media, status: str) -> None:
        media.status = status
        media.processing_claim = None
        media.processing_lease_until = None
        media.updated_at = utcnow()


def put_variant_row(media: Media, new: NewVariant) -> str | None:
    """Add or update the variant's row and the media's list of variants (in a transaction);
    returns the storage key it replaced, if any."""
    row = next((v for v in media.variant_rows if v.name == new.name), None)
    replaced = None
    if row is None:
        row = MediaVariant(name=new.name)
        media.variant_rows.append(row)
    elif row.storage_key != new.storage_key:
        replaced = row.storage_key
    row.fingerprint, row.storage_key = new.fingerprint, new.storage_key
    row.width, row.height = new.rendered.width, new.rendered.height
    row.format, row.mime_type = new.rendered.format, new.rendered.mime_type
    row.size, row.created_at = new.rendered.size, utcnow()
    listed = [item for item in media.variant_list or () if item["name"] != new.name]
    media.variant_list = sorted([*listed, row.to_json()], key=lambda item: item["name"])
    return replaced


@functools.lru_cache(maxsize=4)
def _installed_tools(timeout_seconds: float) -> probing.ProbeTools:
    """The tools on PATH, looked up once per process rather than on every run of the timer."""
    return probing.ProbeTools(timeout_seconds=timeout_seconds)


def variant_key(storage_key: str, name: str, fingerprint: str) -> str:
    """Where a variant's bytes live: beside the original, named by recipe, so a redone job
    writes the same object and a changed recipe a new one."""
    return f"{storage_key}.{name}-{fingerprint}"


def _copy_to_file(storage: Storage, key: str, path: Path) -> None:
    with open(path, "wb") as handle:
        for chunk in storage.iter_chunks(key, chunk_size=COPY_BLOCK):
            handle.write(chunk)


def put_file(storage: Storage, key: str, path: Path, content_type: str) -> None:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while block := handle.read(COPY_BLOCK):
                yield block

    storage.put(key, chunks(), content_type)


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    """Facts as they go on the wire: camelCase keys, no empty values."""
    result = {}
    for name, value in values.items():
        if value is None:
            continue
        head, *rest = name.split("_")
        result[head + "".join(part.title() for part in rest)] = value
    return result


__all__ = ["MediaProcessor", "variant_key"]
