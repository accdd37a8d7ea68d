"""Every pixel mode Pillow decodes, in every allowed format that holds it, through the whole
pipeline: ``upload_file``, then processing, then the stored variants read back and sampled.

The matrix is generated here with Pillow (no files committed). Each source image is made of
vertical stripes, one per tone: black, a middle value and the maximum of its mode (16-bit
values above 32767 included), plus a transparent stripe where the mode has alpha. The tones a
variant must show are computed from the documented rules (docs/rpc.md, "Image modes"), not by
the code under test. Sources are 800 x 200, so the ``small`` preset (640 wide) resamples them
and the larger presets keep them as they are.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from services.media.core.models import MediaVariant
from services.media.processing import imaging
from services.media.processing.imaging import colour
from tests import images
from tests.files import upload_data

WIDTH, HEIGHT = 800, 200
# Lossy WebP variants of flat stripes (and lossy JPEG, AVIF and HEIC sources): each channel of a
# stripe's centre is within this of the tone it should have.
TOLERANCE = 10
# A lossy source and the YCbCr 4:2:0 chroma of JPEG, AVIF and HEIC shift saturated colours more.
LOSSY_SOURCE_TOLERANCE = 16
LOSSY_SOURCES = frozenset({"JPEG", "AVIF", "HEIF"})

Tone = tuple[int, int, int]  # what the stripe must look like, 8-bit sRGB

MAX_I32 = 2**31 - 1


def _lab_grey(lightness: int) -> int:
    """The sRGB grey of a neutral CIELAB colour stored with L in 0..255 (Pillow's LAB)."""
    l_star = lightness * 100 / 255
    y = ((l_star + 16) / 116) ** 3 if l_star > 8 else l_star / 903.3
    srgb = 12.92 * y if y <= 0.0031308 else 1.055 * y ** (1 / 2.4) - 0.055
    return round(255 * srgb)


def _ycbcr(y: int, cb: int, cr: int) -> Tone:
    """ITU-R BT.601 full range, as JPEG (JFIF) defines it."""

    def clip(v: float) -> int:
        return max(0, min(255, round(v)))

    return (
        clip(y + 1.402 * (cr - 128)),
        clip(y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)),
        clip(y + 1.772 * (cb - 128)),
    )


def _cmyk(c: int, m: int, y: int, k: int) -> Tone:
    """Without a profile: each ink removes its share of the light K left (Pillow's formula)."""
    return tuple(round((255 - ink) * (255 - k) / 255) for ink in (c, m, y))  # type: ignore[return-value]


def _grey(value: float) -> Tone:
    v = max(0, min(255, math.floor(value + 0.5)))
    return (v, v, v)


# Per mode: (stored stripe values, the tone each must show). The scaling rules are the
# documented ones: 16-bit by 0..65535, I within 0..65535 the same and beyond by its own range
# from 0, F by 0.0..1.0 or beyond by its own range.
PALETTE = [0, 0, 0, 200, 100, 50, 255, 255, 255, 10, 200, 30]
TONE_SETS: dict[str, list[tuple[Any, Tone]]] = {
    "1": [(0, (0, 0, 0)), (255, (255, 255, 255))],
    "L": [(0, _grey(0)), (128, _grey(128)), (255, _grey(255))],
    "LA": [((0, 255), _grey(0)), ((128, 255), _grey(128)), ((255, 255), _grey(255))],
    "La": [((0, 255), _grey(0)), ((128, 255), _grey(128)), ((255, 255), _grey(255))],
    "P": [(0, (0, 0, 0)), (1, (200, 100, 50)), (2, (255, 255, 255))],
    "PA": [((0, 255), (0, 0, 0)), ((1, 255), (200, 100, 50)), ((2, 255), (255, 255, 255))],
    "RGB": [((0, 0, 0), (0, 0, 0)), ((128, 64, 200), (128, 64, 200)), ((255,) * 3, (255,) * 3)],
    "RGBA": [((0, 0, 0, 255), (0, 0, 0)), ((128, 64, 200, 255), (128, 64, 200)),
             ((255, 255, 255, 255), (255, 255, 255))],
    "RGBa": [((0, 0, 0, 255), (0, 0, 0)), ((128, 64, 200, 255), (128, 64, 200)),
             ((255, 255, 255, 255), (255, 255, 255))],
    "CMYK": [((0, 0, 0, 0), _cmyk(0, 0, 0, 0)), ((0, 128, 255, 0), _cmyk(0, 128, 255, 0)),
             ((0, 0, 0, 255), _cmyk(0, 0, 0, 255))],
    "YCbCr": [((0, 128, 128), _ycbcr(0, 128, 128)), ((128, 128, 128), _ycbcr(128, 128, 128)),
              ((150, 44, 21), _ycbcr(150, 44, 21)), ((255, 128, 128), _ycbcr(255, 128, 128))],
    "LAB": [((0, 128, 128), _grey(0)), ((128, 128, 128), _grey(_lab_grey(128))),
            ((255, 128, 128), _grey(255))],
    "HSV": [((0, 0, 0), (0, 0, 0)), ((0, 255, 255), (255, 0, 0)), ((0, 0, 128), _grey(128))],
    "I": [(0, _grey(0)), (2**30, _grey(2**30 * 255 / MAX_I32)), (MAX_I32, _grey(255))],
    "I-16": [(0, _grey(0)), (32768, _grey(32768 / 257)), (65535, _grey(255))],
    "I;16": [(0, _grey(0)), (16384, _grey(16384 / 257)), (49152, _grey(49152 / 257)),
             (65535, _grey(255))],
    "F": [(0.0, _grey(0)), (0.5, _grey(127.5)), (1.0, _grey(255))],
    "F-wide": [(-1.0, _grey(0)), (0.0, _grey(255 / 4)), (3.0, _grey(255))],
}  # fmt: skip
for _twin in ("I;16B", "I;16L"):
    TONE_SETS[_twin] = TONE_SETS["I;16"]

ALPHA_MODES = {"LA": (128, 0), "La": (128, 0), "PA": (1, 0), "RGBA": (128, 64, 200, 0),
               "RGBa": (0, 0, 0, 0)}  # fmt: skip

# The allowed formats that store each mode as it is (checked in the test: the reopened image has
# that mode). Modes no format stores (La, RGBa, HSV) are decoded states, tested in memory below.
HOLDS = {
    "1": ["PNG", "TIFF", "BMP"],
    "L": ["PNG", "JPEG", "TIFF", "BMP", "AVIF", "HEIF"],
    "LA": ["PNG", "TIFF"],
    "P": ["PNG", "GIF", "TIFF", "BMP"],
    "PA": ["TIFF"],
    "RGB": ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "AVIF", "HEIF"],
    "RGBA": ["PNG", "WEBP", "TIFF", "AVIF", "HEIF"],
    "CMYK": ["JPEG", "TIFF"],
    "YCbCr": ["TIFF"],
    "LAB": ["TIFF"],
    "I": ["TIFF"],
    "I-16": ["TIFF"],
    "I;16": ["PNG", "TIFF", "HEIF"],
    "I;16B": ["PNG", "TIFF"],
    "I;16L": ["TIFF"],
    "F": ["TIFF"],
    "F-wide": ["TIFF"],
}
# What each format hands back for a mode it holds under another name (same samples).
REOPENED_AS = {("I;16B", "PNG"): "I;16", ("I;16L", "TIFF"): "I;16", ("I-16", "TIFF"): "I",
               ("F-wide", "TIFF"): "F"}  # fmt: skip
PROFILES = ("sRGB", "Display P3", "Adobe RGB (1998)")
ICC_FORMATS = ["PNG", "JPEG", "WEBP", "TIFF", "AVIF", "HEIF"]
ORIENTED_MODES = ["RGB", "L", "CMYK"]
# The same table as ImageOps.exif_transpose, written out to stay independent of the code.
TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


@dataclass(frozen=True)
class Case:
    tones: str  # a key of TONE_SETS (the mode, or the mode and a range)
    fmt: str
    profile: str | None = None
    orientation: int | None = None
    transparent_index: bool = False  # a palette entry marked transparent (P in PNG and GIF)

    @property
    def mode(self) -> str:
        return self.tones.split("-")[0]

    @property
    def has_alpha(self) -> bool:
        return self.mode in ALPHA_MODES or self.transparent_index

    def __str__(self) -> str:
        parts = [self.tones, self.fmt]
        if self.profile:
            parts.append(self.profile.replace(" ", ""))
        if self.orientation:
            parts.append(f"orientation{self.orientation}")
        if self.transparent_index:
            parts.append("transparent")
        return "-".join(parts)


def _cases() -> list[Case]:
    cases = [Case(tones, fmt) for tones, formats in HOLDS.items() for fmt in formats]
    cases += [Case("P", fmt, transparent_index=True) for fmt in ("PNG", "GIF")]
    cases += [Case("RGB", fmt, profile=p) for fmt in ICC_FORMATS for p in PROFILES]
    cases += [Case("RGBA", fmt, profile=p) for fmt in ("PNG", "WEBP") for p in PROFILES]
    cases += [Case(mode, "JPEG", orientation=o) for mode in ORIENTED_MODES for o in range(1, 9)]
    # An iPhone's HEIC: libheif applies the rotation itself and reports orientation 1.
    cases += [Case("RGB", "HEIF", orientation=o) for o in (3, 6, 8)]
    return cases


CASES = _cases()


def _stripes(case: Case) -> list[tuple[Any, Tone | None]]:
    """Stored values left to right, with the tone each shows (None: transparent)."""
    stripes: list[tuple[Any, Tone | None]] = list(TONE_SETS[case.tones])
    if case.mode in ALPHA_MODES:
        stripes.append((ALPHA_MODES[case.mode], None))
    if case.transparent_index:
        stripes.append((3, None))
    return stripes


def source_image(case: Case) -> Image.Image:
    stripes = _stripes(case)
    image = Image.new(case.mode, (WIDTH, HEIGHT))
    if case.mode in ("P", "PA"):
        image.putpalette(PALETTE)
    width = WIDTH // len(stripes)
    for index, (value, _) in enumerate(stripes):
        right = WIDTH if index == len(stripes) - 1 else (index + 1) * width
        # A tile, not a colour: Pillow's paste of a colour value writes 0 into 16-bit modes.
        image.paste(
            Image.new(case.mode, (right - index * width, HEIGHT), value), (index * width, 0)
        )
    if case.transparent_index:
        image.info["transparency"] = 3
    return image


def expected_image(case: Case) -> Image.Image:
    """RGBA as displayed: the tone of every stripe, alpha 0 where transparent."""
    stripes = _stripes(case)
    image = Image.new("RGBA", (WIDTH, HEIGHT))
    width = WIDTH // len(stripes)
    for index, (_, tone) in enumerate(stripes):
        right = WIDTH if index == len(stripes) - 1 else (index + 1) * width
        fill = (0, 0, 0, 0) if tone is None else (*tone, 255)
        image.paste(fill, (index * width, 0, right, HEIGHT))
    for method in TRANSPOSE.get(case.orientation or 1, []):
        image = image.transpose(method)
    return image


@functools.cache
def _profile_bytes(name: str) -> bytes:
    """Made once: an sRGB profile from ImageCms carries the time it was made."""
    if name == "sRGB":
        return images.srgb_profile()
    return images.rgb_profile(name)


def encoded_source(case: Case) -> bytes:
    image = source_image(case)
    params: dict[str, Any] = {}
    if case.fmt in ("JPEG", "AVIF", "HEIF"):
        params["quality"] = 95
    if case.fmt == "WEBP":
        params["lossless"] = True
    if case.profile:
        params["icc_profile"] = _profile_bytes(case.profile)
    if case.orientation:
        exif = Image.Exif()
        exif[0x0112] = case.orientation
        params["exif"] = exif.tobytes()
    if case.transparent_index:
        params["transparency"] = 3
    buffer = io.BytesIO()
    image.save(buffer, case.fmt, **params)
    return buffer.getvalue()


def _near(got: tuple[int, ...], want: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


def check_rendition(case: Case, rendition: Image.Image, expected: Image.Image) -> None:
    """Sample the rendition at points whose neighbourhood in the expected image is one stripe."""
    assert rendition.size[0] / rendition.size[1] == pytest.approx(
        expected.size[0] / expected.size[1], rel=0.02
    ), f"{case}: the rendition is not upright"
    tolerance = LOSSY_SOURCE_TOLERANCE if case.fmt in LOSSY_SOURCES else TOLERANCE
    got_image = rendition.convert("RGBA")
    checked = 0
    for fy in (0.25, 0.5, 0.75):
        for step in range(1, 40):
            fx = step / 40
            ex, ey = int(fx * expected.width), int(fy * expected.height)
            reach = max(6, expected.width // 25)
            around = {
                expected.getpixel((min(expected.width - 1, max(0, ex + dx)), ey))
                for dx in (-reach, 0, reach)
            } | {
                expected.getpixel((ex, min(expected.height - 1, max(0, ey + dy))))
                for dy in (-reach, 0, reach)
            }
            if len(around) != 1:
                continue  # near a stripe's edge, where resampling blends
            want = expected.getpixel((ex, ey))
            got = got_image.getpixel((int(fx * rendition.width), int(fy * rendition.height)))
            checked += 1
            if want[3] == 0:
                assert got[3] <= 16, f"{case}: transparent at {fx:.2f},{fy}, got alpha {got[3]}"
                continue
            assert got[3] >= 240, f"{case}: opaque at {fx:.2f},{fy}, got alpha {got[3]}"
            assert _near(got[:3], want[:3], tolerance), (
                f"{case}: at {fx:.2f},{fy} expected {want[:3]}, got {got[:3]}"
            )
    assert checked >= 20, f"{case}: too few points sampled ({checked})"


def test_the_matrix_is_what_the_docs_say() -> None:
    """Guards against the matrix silently shrinking: these counts are in docs and the issue."""
    assert len(CASES) == len(set(CASES)) == 95
    assert {case.mode for case in CASES} | {"La", "RGBa", "HSV"} == {
        "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV",
        "I", "I;16", "I;16B", "I;16L", "F",
    }  # fmt: skip
    assert imaging.DECODERS["AVIF"] and imaging.DECODERS["HEIF"]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_mode_and_format_is_processed_to_ready(service, storage, sessions, case) -> None:
    data = encoded_source(case)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode == REOPENED_AS.get((case.tones, case.fmt), case.mode), (
        f"{case.fmt} does not hold {case.mode} (it reopened as {reopened.mode})"
    )
    media = service.upload_file(upload_data(data, name=f"case.{case.fmt.lower()}"))
    service.process_media()
    done = service.findOne(media["id"])
    assert done["status"] == "READY", done["processingError"]
    assert {v["name"] for v in done["variants"]} == {"thumbnail", "small", "medium", "large"}
    shown = (HEIGHT, WIDTH) if case.orientation in (5, 6, 7, 8) else (WIDTH, HEIGHT)
    assert (done["width"], done["height"]) == shown
    assert done["facts"]["hasAlpha"] is case.has_alpha
    expected = expected_image(case)
    for variant in done["variants"]:
        stored = _stored_variant(storage, sessions, media["id"], variant["name"])
        rendition = Image.open(io.BytesIO(stored))
        if variant["name"] == "small":
            assert rendition.width == 640 if shown[0] > shown[1] else rendition.height == 640
        if variant["name"] != "thumbnail":  # the thumbnail is a centre crop
            check_rendition(case, rendition, expected)
        if case.profile:
            assert rendition.info.get("icc_profile") == _profile_bytes(case.profile), (
                f"{case}: the {variant['name']} variant lost the source's colour profile"
            )


def _stored_variant(storage, sessions, media_id: str, name: str) -> bytes:
    with sessions() as session:
        key = session.scalar(
            select(MediaVariant.storage_key).where(
                MediaVariant.media_id == media_id, MediaVariant.name == name
            )
        )
    return b"".join(storage.iter_chunks(key))


@pytest.mark.parametrize("tones", ["La", "RGBa", "HSV"])
def test_modes_no_format_stores_become_working_modes(tones: str) -> None:
    """Decoded states that only a decoder hands out (premultiplied alpha, HSV): the conversion
    every decoded image goes through before resampling gives their tones in 8-bit RGB(A)/L(A)."""
    case = Case(tones, "memory")
    working, _ = colour._canonical(source_image(case), None)
    assert working.mode in ("L", "LA", "RGB", "RGBA")
    check_rendition(case, working, expected_image(case))


def test_the_16_bit_grey_png_of_the_issue_samples_near_64_and_191(service, storage, sessions):
    image = Image.new("I;16", (200, 100), 49152)
    image.paste(Image.new("I;16", (100, 100), 16384), (0, 0))
    media = service.upload_file(upload_data(images.encode(image, "PNG"), name="scan.png"))
    service.process_media()
    done = service.findOne(media["id"])
    assert done["status"] == "READY" and len(done["variants"]) == 4
    for variant in done["variants"]:
        rendition = Image.open(
            io.BytesIO(_stored_variant(storage, sessions, media["id"], variant["name"]))
        ).convert("L")
        left = rendition.getpixel((rendition.width // 4, rendition.height // 2))
        right = rendition.getpixel((3 * rendition.width // 4, rendition.height // 2))
        assert abs(left - 64) <= 3 and abs(right - 191) <= 3, (variant["name"], left, right)
