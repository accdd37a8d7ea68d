"""Processing off the request path: facts, preset variants, hostile files, dead workers, and the
variants callers ask for (resize, crop, optimize), on real databases, disk and tools."""

from __future__ import annotations

import io
import logging
import struct
import subprocess
from dataclasses import replace
from datetime import timedelta

import pytest
from PIL import Image, ImageFile
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from services.media.core.ids import utcnow
from services.media.core.models import Media, MediaVariant
from services.media.exceptions import (
    Forbidden,
    NotFound,
    UnsupportedMediaType,
    ValidationError,
)
from services.media.processing import jobs as processing
from services.media.processing.av import ProbeTools
from services.media.processing.imaging import VariantRecipe
from services.media.processing.imaging import operations as imaging_operations
from services.media.processing.jobs import MediaProcessor
from tests import images
from tests.conftest import require_tools
from tests.files import one_page_pdf_bytes, upload_data, write_mp4_like
from tests.unit.conftest import act_as, without_signed_url


def _upload(service, data: bytes, name: str = "photo.jpg", **extra):
    return service.upload_file(upload_data(data, name=name, **extra))


def _stored(storage, key: str) -> bytes:
    return b"".join(storage.iter_chunks(key))


def _variant_rows(sessions, media_id: str) -> dict[str, MediaVariant]:
    with sessions() as session:
        rows = session.scalars(select(MediaVariant).where(MediaVariant.media_id == media_id))
        return {row.name: row for row in rows}


# -- images ----------------------------------------------------------------------------------------


def test_an_image_gets_facts_and_presets_off_the_request_path(
    service, storage, sessions, dispatched
):
    media = _upload(service, images.big_jpeg())
    assert media["status"] == "PROCESSING" and media["variants"] == []
    assert dispatched.types() == ["media_created"]

    service.process_media()

    done = service.findOne(media["id"])
    assert done["status"] == "READY" and done["processingError"] is None
    facts = done["facts"]
    assert (facts["width"], facts["height"], facts["aspect"]) == (2400, 1800, "4:3")
    assert facts["format"] == "JPEG" and facts["mode"] == "RGB" and facts["animated"] is False
    assert facts["dominantColor"].startswith("#") and len(facts["dominantColor"]) == 7
    assert len(facts["blurhash"]) >= 6 and facts["lqip"].startswith("data:image/webp;base64,")
    sizes = {v["name"]: (v["width"], v["height"], v["format"]) for v in done["variants"]}
    assert sizes == {
        "thumbnail": (256, 256, "WEBP"),
        "small": (640, 480, "WEBP"),
        "medium": (1280, 960, "WEBP"),
        "large": (1920, 1440, "WEBP"),
    }
    assert all("variant=" in v["url"] and "signature=" in v["url"] for v in done["variants"])
    assert dispatched.types() == ["media_created", "media_processed"]
    assert dispatched[-1][1]["media"]["status"] == "READY"
    for row in _variant_rows(sessions, media["id"]).values():
        with Image.open(io.BytesIO(_stored(storage, row.storage_key))) as rendered:
            assert rendered.format == "WEBP" and rendered.size == (row.width, row.height)


def test_variants_are_never_larger_than_the_original(service):
    media = _upload(service, images.jpeg(100, 50))
    service.process_media()
    variants = service.findOne(media["id"])["variants"]
    assert {(v["width"], v["height"]) for v in variants} <= {(100, 50), (50, 50)}


def test_renditions_carry_no_location_and_are_upright(service, storage, sessions):
    gps = _upload(service, images.gps_jpeg())
    turned = _upload(service, images.oriented(6), name="turned.jpg")
    service.process_media()
    for row in _variant_rows(sessions, gps["id"]).values():
        with Image.open(io.BytesIO(_stored(storage, row.storage_key))) as rendered:
            assert len(rendered.getexif()) == 0 and "exif" not in rendered.info
            assert "xmp" not in rendered.info
    facts = service.findOne(turned["id"])["facts"]
    # Stored sideways with orientation 6: displayed the other way round.
    assert facts["orientation"] == 6
    stored_width, stored_height = Image.open(io.BytesIO(images.oriented(6))).size
    assert (facts["width"], facts["height"]) == (stored_height, stored_width)
    thumbnail = _variant_rows(sessions, turned["id"])["small"]
    assert (thumbnail.width, thumbnail.height) == (stored_height, stored_width)


@pytest.mark.parametrize(
    "data",
    [images.png_rgba(), images.animated_gif(), images.png16(), images.one_pixel()],
    ids=["alpha", "animated-gif", "16-bit", "1x1"],
)
def test_odd_images_are_processed(service, data):
    media = _upload(service, data, name="odd.png")
    service.process_media()
    done = service.findOne(media["id"])
    assert done["status"] == "READY", done["processingError"]
    assert len(done["variants"]) == 4


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (images.truncated(images.jpeg(400, 300)), "truncated"),
        (images.truncated(images.encode(images.photo(300, 200), "PNG")), ""),
    ],
    ids=["truncated-jpeg", "truncated-png"],
)
def test_a_broken_image_fails_cleanly(service, storage, sessions, dispatched, data, reason):
    media = _upload(service, data)
    service.process_media()
    failed = service.findOne(media["id"])
    assert failed["status"] == "FAILED"
    assert reason in failed["processingError"].lower() and failed["variants"] == []
    assert dispatched.types() == ["media_created", "media_processing_failed"]
    assert dispatched[-1][1]["reason"] == failed["processingError"]
    assert _variant_rows(sessions, media["id"]) == {}
    assert len(list(storage.iter_objects())) == 1  # only the original


def test_a_polyglot_gif_loses_its_payload_in_every_variant(service, storage, sessions):
    media = _upload(service, images.animated_gif() + images.jar(), name="cat.gif")
    service.process_media()
    assert service.findOne(media["id"])["status"] == "READY"
    for row in _variant_rows(sessions, media["id"]).values():
        assert b"PK\x03\x04" not in _stored(storage, row.storage_key)


def test_an_image_over_the_pixel_limit_is_refused_at_upload_or_fails_processing(service, settings):
    small = replace(settings, image_limits=replace(settings.image_limits, max_pixels=1000))
    service.catalog.settings = small
    with pytest.raises(UnsupportedMediaType, match="over the limit of 1000 pixels"):
        _upload(service, images.jpeg(100, 50))
    # Bytes that arrived another way (an upload session) meet the limit in processing.
    service.catalog.settings = settings
    media = _upload(service, images.jpeg(100, 50))
    service.catalog.settings = small
    service.process_media()
    failed = service.findOne(media["id"])
    assert failed["status"] == "FAILED" and "pixels" in failed["processingError"]


# -- dead workers and retries -------------------------------------------------------------------


def test_a_job_whose_worker_died_is_done_once_its_lease_runs_out(service, sessions, dispatched):
    media = _upload(service, images.jpeg())
    processor = service.processor
    (abandoned,) = processor.claim(10)  # this worker then dies
    assert processor.claim(10) == []  # the lease keeps others off
    service.process_media()
    assert service.findOne(media["id"])["status"] == "PROCESSING"

    with sessions.begin() as session:
        session.execute(
            update(Media).values(processing_lease_until=utcnow() - timedelta(seconds=1))
        )
    service.process_media()
    done = service.findOne(media["id"])
    assert done["status"] == "READY" and len(done["variants"]) == 4
    with sessions() as session:
        assert session.get(Media, media["id"]).processing_attempts == 2
    # The dead worker coming back to life commits nothing: its claim is gone.
    processor.process(abandoned)
    assert dispatched.types() == ["media_created", "media_processed"]


# -- what a failure is blamed on: the file, a dependency, or our own code -------------------------


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (images.truncated(images.encode(images.photo(300, 200), "TIFF"), 0.5), "truncated"),
        (images.truncated(images.encode(images.photo(300, 200), "GIF"), 0.5), "truncated"),
        (images.truncated(images.encode(images.photo(300, 200), "BMP"), 0.5), "truncated"),
        (images.truncated(images.encode(images.photo(300, 200), "HEIF"), 0.6), "end of file"),
        (images.png_broken_stream(), "broken data stream"),
    ],
    ids=["tiff", "gif", "bmp", "heic", "png-stream"],
)
def test_a_file_the_decoder_refuses_fails_at_its_first_attempt(service, sessions, data, said):
    media = _upload(service, data)
    service.process_media()
    failed = service.findOne(media["id"])
    assert failed["status"] == "FAILED"
    assert said in failed["processingError"]  # what Pillow said
    with sessions() as session:
        assert session.get(Media, media["id"]).processing_attempts == 1


DECODER_ERRORS = [
    ValueError("image has wrong mode"),
    OSError("decoder error -2"),
    SyntaxError("broken PNG file"),
    EOFError(),
    IndexError("list index out of range"),
    struct.error("unpack requires a buffer of 4 bytes"),
    KeyError(262),
    TypeError("an integer is required"),
    ZeroDivisionError("division by zero"),
    MemoryError(),
]


@pytest.mark.parametrize("error", DECODER_ERRORS, ids=lambda e: type(e).__name__)
def test_every_exception_of_the_decoder_is_a_verdict_on_the_file(
    service, sessions, dispatched, monkeypatch, error
):
    # Stands in for a file that makes Pillow raise this: which bytes trigger which exception
    # changes between Pillow versions; what matters is how the pipeline treats it.
    media = _upload(service, images.encode(images.photo(300, 200), "PNG"), name="p.png")

    def load(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    service.process_media()
    failed = service.findOne(media["id"])
    assert failed["status"] == "FAILED"
    expected = (
        "more memory" if isinstance(error, MemoryError) else str(error) or type(error).__name__
    )
    assert expected in failed["processingError"]
    assert dispatched.types() == ["media_created", "media_processing_failed"]
    with sessions() as session:
        assert session.get(Media, media["id"]).processing_attempts == 1


def _failures(kind: str) -> float:
    return REGISTRY.get_sample_value("media_processing_failures_total", {"kind": kind}) or 0.0


def test_a_defect_of_our_own_code_fails_at_once_loudly(service, sessions, monkeypatch, caplog):
    media = _upload(service, images.jpeg())
    before = _failures("defect")

    def broken_encode(*args, **kwargs):
        raise ValueError("image has wrong mode")

    # Replaced where it is looked up: the operations module calls its own imported name.
    monkeypatch.setattr(imaging_operations, "_encode", broken_encode)
    with caplog.at_level(logging.ERROR, logger="services.media.processing.jobs"):
        service.process_media()
    failed = service.findOne(media["id"])
    assert failed["status"] == "FAILED"
    assert "internal error: ValueError: image has wrong mode" in failed["processingError"]
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert media["id"] in record.getMessage() and record.exc_info is not None
    assert _failures("defect") == before + 1
    with sessions() as session:
        assert session.get(Media, media["id"]).processing_attempts == 1


class FlakyStorage:
    """Reads fail: a storage outage during processing (outside what the service controls)."""

    def __init__(self, storage):
        self._storage = storage

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def local_path(self, key):
        return None  # read through the backend, as on S3

    def iter_chunks(self, *args, **kwargs):
        raise OSError("the disk went away")


def test_an_outage_is_retried_then_fails_after_the_last_attempt(service, sessions, settings):
    media = _upload(service, images.jpeg())
    real = service.catalog.storage
    service.catalog.storage = FlakyStorage(real)
    service.catalog.settings = replace(
        settings,
        processing_max_attempts=3,
        processing_retry_delays=(timedelta(seconds=10), timedelta(minutes=1)),
    )
    for attempt, delay in ((1, 10), (2, 60)):
        before = utcnow()
        service.process_media()
        assert service.findOne(media["id"])["status"] == "PROCESSING"  # tried again later
        with sessions() as session:
            row = session.get(Media, media["id"])
            # The claim is released at once, and the next try waits out the backoff, not the
            # 10-minute lease.
            assert row.processing_claim is None and row.processing_attempts == attempt
            wait = row.processing_lease_until - before
            assert delay - 1 <= wait.total_seconds() <= delay + 5
        service.process_media()  # within the backoff: nothing runs
        with sessions() as session:
            assert session.get(Media, media["id"]).processing_attempts == attempt
        _backoff_over(sessions)
    service.process_media()
    failed = service.findOne(media["id"])
    assert failed["status"] == "FAILED"
    assert "3 times" in failed["processingError"] and "disk went away" in failed["processingError"]


def _backoff_over(sessions) -> None:
    with sessions.begin() as session:
        session.execute(
            update(Media).values(processing_lease_until=utcnow() - timedelta(seconds=1))
        )


def test_a_media_removed_while_processing_stays_removed(service, dispatched):
    media = _upload(service, images.jpeg())
    (job,) = service.processor.claim(1)
    service.remove(media["id"])
    service.processor.process(job)
    assert "media_processed" not in dispatched.types()
    assert service.restore(media["id"])["status"] == "PROCESSING"


# -- video, audio, PDF ---------------------------------------------------------------------------


@pytest.fixture
def video(tmp_path):
    require_tools("ffmpeg", "ffprobe")
    path = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine", "-t", "2", "-c:v", "mpeg4", "-c:a", "aac",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path.read_bytes()


def test_a_video_gets_its_facts_a_poster_and_thumbnails(service, video):
    media = _upload(service, video, name="clip.mp4")
    service.process_media()
    done = service.findOne(media["id"])
    assert done["status"] == "READY", done["processingError"]
    facts = done["facts"]
    assert facts["duration"] == pytest.approx(2.0, abs=0.1)
    assert facts["videoCodec"] == "mpeg4" and facts["audioCodec"] == "aac"
    assert facts["hasVideo"] is True and facts["hasAudio"] is True
    assert (done["width"], done["height"]) == (320, 240)
    names = {v["name"]: v for v in done["variants"]}
    assert names["poster"]["mimeType"] == "image/jpeg"
    assert (names["poster"]["width"], names["poster"]["height"]) == (320, 240)
    assert {"thumbnail", "small"} <= set(names)


def test_without_tools_a_video_is_ready_and_says_why(service, video):
    media = _upload(service, video, name="clip.mp4")
    processor = MediaProcessor(
        service.catalog, ProbeTools(ffprobe=None, ffmpeg=None, pdfinfo=None, pdftoppm=None)
    )
    processor.run_pending()
    done = service.findOne(media["id"])
    assert done["status"] == "READY" and done["variants"] == []
    assert "ffprobe" in done["facts"]["note"] and "not installed" in done["facts"]["note"]


def test_a_pdf_gets_its_page_count_and_a_preview(service):
    require_tools("pdfinfo", "pdftoppm")
    media = _upload(service, one_page_pdf_bytes(), name="syllabus.pdf")
    service.process_media()
    done = service.findOne(media["id"])
    assert done["status"] == "READY", done["processingError"]
    assert done["facts"]["pages"] == 1
    assert {"preview", "thumbnail"} <= {v["name"] for v in done["variants"]}


def test_text_is_ready_at_once(service):
    media = _upload(service, b"just notes\n", name="notes.txt")
    assert media["status"] == "READY" and media["facts"] is None


# -- variants on request -------------------------------------------------------------------------


def test_resize_reuses_a_stored_result(service, dispatched, storage):
    media = _upload(service, images.jpeg(400, 300))
    first = service.resize(media["id"], {"width": 100, "format": "JPEG"})
    assert (first["width"], first["height"], first["format"]) == (100, 75, "JPEG")
    objects = len(list(storage.iter_objects()))
    again = service.resize(media["id"], {"width": 100, "format": "JPEG"})
    assert again["name"] == first["name"] and again["size"] == first["size"]
    assert len(list(storage.iter_objects())) == objects
    assert dispatched.types().count("media_updated") == 1
    listed = service.getVariants(media["id"])["items"]
    assert first["name"] in {v["name"] for v in listed}
    link = service.getUrl(media["id"], {"variant": first["name"]})
    assert f"variant={first['name']}" in link["url"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "width"),
        ({"width": 100, "fit": "cover"}, "fit"),
        ({"width": 0}, "width"),
        ({"width": 100, "format": "GIF"}, "format"),
        ({"width": 100, "quality": 101}, "quality"),
        ({"width": 100, "extra": 1}, "extra"),
    ],
)
def test_bad_resize_options(service, options, field):
    media = _upload(service, images.jpeg())
    with pytest.raises(ValidationError) as caught:
        service.resize(media["id"], options)
    assert any(name.endswith(field) for name in caught.value.fields)


def test_crop_in_displayed_pixels(service):
    media = _upload(service, images.jpeg(400, 300))
    cropped = service.crop(media["id"], {"x": 10, "y": 20, "width": 100, "height": 50})
    assert (cropped["width"], cropped["height"]) == (100, 50)
    with pytest.raises(ValidationError) as caught:
        service.crop(media["id"], {"x": 350, "y": 0, "width": 100, "height": 50})
    assert any("width" in name or "x" in name for name in caught.value.fields)


def test_optimize_records_the_saving(service):
    heavy = _upload(service, images.jpeg(600, 400, quality=100))
    result = service.optimize(heavy["id"])
    assert result["improved"] is True and result["originalSize"] == heavy["size"]
    assert result["optimizedSize"] < heavy["size"] and 0 < result["ratio"] < 1
    assert result["variant"]["name"] == "optimized"
    assert (result["variant"]["width"], result["variant"]["height"]) == (600, 400)
    # Reused, not rendered again (its link is signed afresh, so a second later it may differ).
    again = service.optimize(heavy["id"])["variant"]
    assert without_signed_url(again) == without_signed_url(result["variant"])


def test_renditions_need_an_image_that_is_yours(service):
    doc = _upload(service, b"notes\n", name="notes.txt")
    with pytest.raises(UnsupportedMediaType):
        service.resize(doc["id"], {"width": 10})
    public = _upload(service, images.jpeg(), isPublic=True)
    with pytest.raises(Forbidden):
        act_as(service, "u-2").resize(public["id"], {"width": 10})
    private = act_as(service, "u-1").upload_file(upload_data(images.jpeg(), name="p.jpg"))
    with pytest.raises(NotFound):
        act_as(service, "u-2").crop(private["id"], {"x": 0, "y": 0, "width": 5, "height": 5})


def test_an_unknown_variant_is_not_found(service):
    media = _upload(service, images.jpeg())
    with pytest.raises(NotFound, match="no variant"):
        service.getUrl(media["id"], {"variant": "huge"})


def test_a_changed_preset_is_regenerated_without_touching_the_original(
    service, storage, sessions, settings
):
    media = _upload(service, images.jpeg(800, 600))
    service.process_media()
    before = _variant_rows(sessions, media["id"])
    recipes = tuple(
        replace(recipe, version=2) if recipe.name == "small" else recipe
        for recipe in settings.variant_recipes
    )
    service.catalog.settings = replace(settings, variant_recipes=recipes)
    with pytest.raises(Forbidden):
        act_as(service, "u-1").regenerateVariants()
    assert act_as(service, None).regenerateVariants({"limit": 10}) == {"regenerated": 1}
    after = _variant_rows(sessions, media["id"])
    assert after["small"].fingerprint != before["small"].fingerprint
    assert after["thumbnail"].storage_key == before["thumbnail"].storage_key
    assert not storage.exists(before["small"].storage_key)
    assert storage.exists(after["small"].storage_key)
    assert service.findOne(media["id"])["checksum"] == media["checksum"]
    assert act_as(service, None).regenerateVariants() == {"regenerated": 0}


def test_variant_objects_are_owned_and_purged_with_their_media(
    service, storage, sessions, settings
):
    media = _upload(service, images.jpeg())
    service.process_media()
    keys = {row.storage_key for row in _variant_rows(sessions, media["id"]).values()}
    service.catalog.settings = replace(settings, orphan_grace=timedelta(0))
    service.sweep_storage()
    assert all(storage.exists(key) for key in keys)
    service.remove(media["id"])
    with sessions.begin() as session:
        session.execute(update(Media).values(deleted_at=utcnow() - timedelta(days=365)))
    service.purge_expired()
    assert list(storage.iter_objects()) == []


def test_variant_keys_live_beside_the_original():
    key = processing.variant_key("media/2026/11/21/abc", "thumbnail", "0123")
    assert key == "media/2026/11/21/abc.thumbnail-0123"
    assert VariantRecipe("x", 10).fingerprint != VariantRecipe("x", 10, version=2).fingerprint


def test_a_tool_that_will_not_start_is_retried_not_blamed_on_the_file(service, settings, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_mp4_like(clip, 4096)
    media = _upload(service, clip.read_bytes(), name="clip.mp4")
    broken = ProbeTools(ffprobe=str(tmp_path / "no-such-ffprobe"), ffmpeg=None)
    service.catalog.settings = replace(
        settings, processing_retry_delays=(timedelta(0),), processing_max_attempts=2
    )
    MediaProcessor(service.catalog, broken).run_pending()
    assert service.findOne(media["id"])["status"] == "PROCESSING"
    MediaProcessor(service.catalog, broken).run_pending()
    failed = service.findOne(media["id"])
    assert failed["status"] == "FAILED" and "2 times" in failed["processingError"]


# -- the hostile files of the issue, end to end: a typed error or a clean FAILED, never a crash ----


@pytest.mark.parametrize(
    ("data", "name", "declared", "error"),
    [
        (images.png_header(20000, 20000), "huge.png", None, UnsupportedMediaType),
        (images.data_file("snippet.eps"), "photo.png", None, UnsupportedMediaType),
        (one_page_pdf_bytes(), "photo.png", "image/png", UnsupportedMediaType),
        (images.data_file("script-xxe.svg"), "photo.png", None, UnsupportedMediaType),
        (images.data_file("script-xxe.svg"), "logo.svg", "image/svg+xml", UnsupportedMediaType),
        (b"", "empty.png", None, ValidationError),
    ],
    ids=["png-header-20000x20000", "eps-as-png", "pdf-as-png", "svg-as-png", "svg", "zero-bytes"],
)
def test_hostile_uploads_are_refused_with_a_typed_error(
    service, storage, data, name, declared, error
):
    extra = {"mimeType": declared} if declared else {}
    with pytest.raises(error):
        _upload(service, data, name=name, **extra)
    assert list(storage.iter_objects()) == []


def test_a_script_after_a_jpeg_is_not_in_any_variant(service, storage, sessions):
    media = _upload(service, images.jpeg(400, 300) + images.SCRIPT)
    service.process_media()
    assert service.findOne(media["id"])["status"] == "READY"
    for row in _variant_rows(sessions, media["id"]).values():
        assert b"<script" not in _stored(storage, row.storage_key)
