"""The imaging domain on real files made by tests/images.py: nothing is mocked except to prove
that a parser never ran."""

from __future__ import annotations

import base64
import io
import math
import random
from dataclasses import replace

import pytest
from PIL import (
    EpsImagePlugin,
    ExifTags,
    Image,
    ImageChops,
    ImageOps,
    ImageStat,
    JpegImagePlugin,
)

from services.media.exceptions import UnsupportedMediaType, ValidationError
from services.media.processing import imaging
from services.media.processing.imaging import (
    DEFAULT_RECIPES,
    CropBox,
    Fit,
    ImagingLimits,
    RecipeError,
    RenderedVariant,
    VariantRecipe,
    blurhash,
    crop,
    image_facts,
    optimize,
    process_image,
    recipes_from_config,
    render_variant,
    render_variants,
    resize,
)
from tests import images
from tests.files import pdf_bytes
from tests.images import BLUE, GREEN, GREY, RED

THUMB = DEFAULT_RECIPES[0]


def rendered(
    data: bytes, recipe: VariantRecipe, **kwargs: object
) -> tuple[RenderedVariant, Image.Image]:
    """Render one variant and return it with the decoded output."""
    out = io.BytesIO()
    variant = render_variant(data, recipe, out, **kwargs)
    assert variant.size == len(out.getvalue())
    return variant, decoded(out.getvalue())


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


def has_no_metadata(data: bytes) -> bool:
    image = decoded(data)
    return (
        b"Exif" not in data
        and not image.getexif()
        and "exif" not in image.info
        and "xmp" not in image.info
        and "comment" not in image.info
    )


# -- limits and hostile files ---------------------------------------------------------------------


def test_ingest_goes_through_the_same_gate() -> None:
    """Upload-time checks and processing refuse the same files, with the same words."""
    import base64

    from services.media.ingest import policy as ingest
    from services.media.ingest.sniffing import sniff

    bomb = images.png_header(8000, 8000)  # over our limit, under Pillow's own
    sniffed = sniff(bomb)
    with pytest.raises(UnsupportedMediaType) as at_upload:
        ingest.decode_and_check(base64.b64encode(bomb).decode(), sniffed)
    with pytest.raises(UnsupportedMediaType) as in_processing:
        imaging.image_facts(bomb)
    assert str(at_upload.value) == str(in_processing.value)
    assert "over the limit of 50000000 pixels" in str(at_upload.value)
    small = ImagingLimits(max_pixels=100)
    with pytest.raises(UnsupportedMediaType, match="over the limit of 100 pixels"):
        ingest.decode_and_check(
            base64.b64encode(images.jpeg(20, 20)).decode(), sniff(images.jpeg(20, 20)), small
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_pixels": 0},
        {"max_pixels": True},
        {"max_pixels": 10**12},  # above Pillow's own bomb limit
        {"formats": ()},
        {"formats": ("EPS",)},
        {"formats": ("jpeg",)},
        {"formats": ("NOPE",)},
    ],
)
def test_limits_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ImagingLimits(**kwargs)  # type: ignore[arg-type]


def test_png_header_claiming_20000x20000_is_refused_as_a_bomb() -> None:
    with pytest.raises(UnsupportedMediaType, match="too many pixels"):
        image_facts(images.png_header(20000, 20000))


def test_pixel_limit_is_checked_from_the_header_before_any_decode() -> None:
    # 56 MP: under Pillow's own limit, over ours. The file has no pixel data at all, so any
    # attempt to decode would fail with a different message.
    with pytest.raises(UnsupportedMediaType, match=r"8000x7000 .* over the limit of 50000000"):
        image_facts(images.png_header(8000, 7000))


def test_real_image_just_over_a_small_limit_is_refused() -> None:
    limits = ImagingLimits(max_pixels=10_000)
    assert image_facts(images.jpeg(100, 100), limits=limits).width == 100
    with pytest.raises(UnsupportedMediaType, match="101x100"):
        image_facts(images.jpeg(101, 100), limits=limits)
    with pytest.raises(UnsupportedMediaType, match="over the limit"):
        render_variant(images.jpeg(101, 100), THUMB, io.BytesIO(), limits=limits)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(images.truncated(images.jpeg(320, 240)), id="jpeg"),
        pytest.param(images.jpeg(320, 240)[:-2], id="jpeg-without-eoi"),
        pytest.param(images.truncated(images.encode(images.photo(200, 150), "PNG"), 0.5), id="png"),
        pytest.param(images.truncated(images.big_jpeg(), 0.3), id="jpeg-draft-path"),
    ],
)
def test_truncated_images_are_errors(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType, match="damaged"):
        image_facts(data)
    with pytest.raises(UnsupportedMediaType, match="damaged"):
        render_variant(data, THUMB, io.BytesIO())


def test_zero_byte_file(tmp_path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for source in (b"", empty, io.BytesIO()):
        with pytest.raises(UnsupportedMediaType, match="empty"):
            image_facts(source)


def test_svg_with_script_and_external_entity_is_never_rasterised() -> None:
    svg = images.data_file("script-xxe.svg")
    with pytest.raises(UnsupportedMediaType, match="not an image in one of the accepted formats"):
        image_facts(svg)
    with pytest.raises(UnsupportedMediaType):
        render_variant(svg, THUMB, io.BytesIO())


@pytest.fixture
def eps_parser_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the EPS parser or Ghostscript ran")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", refuse)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", refuse)


@pytest.mark.usefixtures("eps_parser_must_not_run")
@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("photo.jpg", images.data_file("snippet.eps")),
        ("photo.eps", images.data_file("snippet.eps")),
        # JPEG magic in front: the JPEG decoder looks, fails, and nothing else gets a turn.
        ("photo.jpg", b"\xff\xd8\xff\xe0" + images.data_file("snippet.eps")),
        ("scan.png", pdf_bytes()),
        ("scan.png", b"\x89PNG\r\n\x1a\n" + pdf_bytes()),
    ],
)
def test_eps_and_pdf_in_disguise_are_refused(tmp_path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    for source in (path, str(path), data):
        with pytest.raises(UnsupportedMediaType):
            image_facts(source)
        with pytest.raises(UnsupportedMediaType):
            render_variant(source, THUMB, io.BytesIO())


@pytest.mark.parametrize("fmt", ["WEBP", "ORIGINAL"])
def test_gif_with_a_jar_appended_renders_without_the_payload(fmt: str) -> None:
    gifar = images.animated_gif() + images.jar()
    facts = image_facts(gifar)
    assert (facts.format, facts.frame_count) == ("GIF", 3)
    out = io.BytesIO()
    variant = render_variant(gifar, VariantRecipe("v", 32, 32, format=fmt), out)
    assert variant.format == ("WEBP" if fmt == "WEBP" else "PNG")
    assert b"PK\x03\x04" not in out.getvalue()
    assert b"Evil" not in out.getvalue()


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG"])
def test_jpeg_with_a_script_appended_renders_without_it(fmt: str) -> None:
    data = images.jpeg(120, 90) + images.SCRIPT
    out = io.BytesIO()
    render_variant(data, VariantRecipe("v", 64, 64, format=fmt), out)
    assert b"<script" not in out.getvalue()
    optimized = io.BytesIO()
    result = optimize(data, optimized)
    assert b"<script" not in optimized.getvalue()
    assert result.original_size == len(data)


def test_bad_source_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        image_facts(42)  # type: ignore[arg-type]


# -- facts ----------------------------------------------------------------------------------------


def test_facts_of_a_photo() -> None:
    facts = image_facts(images.big_jpeg())
    assert (facts.width, facts.height) == (2400, 1800)
    assert (facts.aspect_ratio, facts.aspect) == (1.3333, "4:3")
    assert (facts.format, facts.mime_type, facts.mode) == ("JPEG", "image/jpeg", "RGB")
    assert (facts.has_alpha, facts.animated, facts.frame_count) == (False, False, 1)
    assert facts.orientation is None
    assert len(facts.blurhash) == 28 and facts.blurhash[0] == "L"  # 4x3 components
    assert facts.dominant_color.startswith("#") and len(facts.dominant_color) == 7
    assert facts.lqip.startswith("data:image/webp;base64,")
    assert len(facts.lqip) < 1000


def test_facts_of_a_jpeg_use_the_reduced_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded_sizes = []
    original_load = JpegImagePlugin.JpegImageFile.load

    def spy(self: JpegImagePlugin.JpegImageFile) -> object:
        decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy, raising=False)
    image_facts(images.big_jpeg())
    render_variant(images.big_jpeg(), THUMB, io.BytesIO())
    # 1/8 for the facts; for a 256 px cover thumbnail the smallest DCT scale that still covers
    # the 256x256 crop: 1/4 of 2400x1800 (1/8 would leave a 225 px crop).
    assert decoded_sizes[0] == (300, 225)
    assert decoded_sizes[-1] == (600, 450)


def test_lqip_is_a_tiny_webp() -> None:
    for data in (images.big_jpeg(), images.png_rgba(), images.one_pixel()):
        lqip = image_facts(data).lqip
        assert len(lqip) < 1000
        tiny = decoded(base64.b64decode(lqip.removeprefix("data:image/webp;base64,")))
        assert tiny.format == "WEBP"
        assert max(tiny.size) <= 24


def test_dominant_color() -> None:
    image = Image.new("RGB", (100, 100), RED)
    image.paste(BLUE, (0, 0, 100, 20))
    dominant = image_facts(images.encode(image, "PNG")).dominant_color
    assert near(Image.new("RGB", (1, 1), dominant).getpixel((0, 0)), RED, 10)


@pytest.mark.parametrize(
    ("data", "mode", "alpha", "animated", "frames"),
    [
        pytest.param(images.png_rgba(), "RGBA", True, False, 1, id="png-alpha"),
        pytest.param(images.animated_gif(), "P", False, True, 3, id="gif"),
        pytest.param(images.animated_webp(), "RGB", False, True, 3, id="webp"),
        pytest.param(images.cmyk_jpeg(), "CMYK", False, False, 1, id="cmyk"),
        pytest.param(images.png16(), "I;16", False, False, 1, id="png16"),
        pytest.param(images.greyscale_jpeg(), "L", False, False, 1, id="grey"),
        pytest.param(images.mpo(), "RGB", False, False, 1, id="mpo"),
    ],
)
def test_facts_of_modes_and_animations(
    data: bytes, mode: str, alpha: bool, animated: bool, frames: int
) -> None:
    facts = image_facts(data)
    assert (facts.mode, facts.has_alpha, facts.animated, facts.frame_count) == (
        mode,
        alpha,
        animated,
        frames,
    )
    assert len(facts.blurhash) == 28


def test_mpo_counts_as_a_jpeg() -> None:
    facts = image_facts(images.mpo())
    assert (facts.format, facts.mime_type) == ("JPEG", "image/jpeg")


def test_one_pixel_image() -> None:
    facts = image_facts(images.one_pixel())
    assert (facts.width, facts.height, facts.aspect, facts.aspect_ratio) == (1, 1, "1:1", 1.0)
    assert near(Image.new("RGB", (1, 1), facts.dominant_color).getpixel((0, 0)), RED, 2)
    variants = render_variants(
        images.one_pixel(), DEFAULT_RECIPES, {r.name: io.BytesIO() for r in DEFAULT_RECIPES}
    )
    assert {(v.width, v.height) for v in variants.values()} == {(1, 1)}


@pytest.mark.parametrize(
    ("size", "aspect"),
    [((1920, 1080), "16:9"), ((1080, 1920), "9:16"), ((1921, 1080), "16:9"), ((300, 100), "3:1")],
)
def test_aspect_labels(size: tuple[int, int], aspect: str) -> None:
    facts = image_facts(images.encode(Image.new("L", size), "PNG"))
    assert facts.aspect == aspect
    assert facts.aspect_ratio == round(size[0] / size[1], 4)


# -- orientation ----------------------------------------------------------------------------------

CORNERS = {"top-left": RED, "top-right": GREEN, "bottom-left": GREY, "bottom-right": GREY}


def corner_colours(image: Image.Image) -> dict[str, tuple[int, ...]]:
    rgb = image.convert("RGB")
    w, h = rgb.size
    dx, dy = max(1, w // 10), max(1, h // 10)
    return {
        "top-left": rgb.getpixel((dx, dy)),
        "top-right": rgb.getpixel((w - 1 - dx, dy)),
        "bottom-left": rgb.getpixel((dx, h - 1 - dy)),
        "bottom-right": rgb.getpixel((w - 1 - dx, h - 1 - dy)),
    }


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_displayed_upright(orientation: int) -> None:
    data = images.oriented(orientation)
    stored = decoded(data)
    assert stored.size == ((40, 60) if orientation >= 5 else (60, 40))
    facts = image_facts(data)
    assert (facts.width, facts.height, facts.orientation) == (60, 40, orientation)

    for recipe in (
        VariantRecipe("v", 30, 30, format="PNG"),
        VariantRecipe("v", 30, 30, format="WEBP"),
        VariantRecipe("v", 40, 20, Fit.COVER, format="PNG"),
    ):
        variant, image = rendered(data, recipe)
        assert image.size == (variant.width, variant.height)
        assert image.size == ((30, 20) if recipe.fit is Fit.INSIDE else (40, 20))
        colours = corner_colours(image)
        for corner, expected in CORNERS.items():
            assert near(colours[corner], expected, 60), (recipe, corner, colours)
        assert not image.getexif()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_crop_box_is_in_displayed_pixels(orientation: int) -> None:
    # Lossless in and out, so the crop must equal exif_transpose + crop pixel for pixel.
    data = images.oriented(orientation, "PNG", images.photo(60, 40))
    upright = ImageOps.exif_transpose(decoded(data))
    out = io.BytesIO()
    variant = crop(data, CropBox(7, 3, 40, 30), out, format="PNG")
    assert (variant.width, variant.height, variant.format) == (40, 30, "PNG")
    assert decoded(out.getvalue()).tobytes() == upright.crop((7, 3, 47, 33)).tobytes()


def psnr(a: Image.Image, b: Image.Image) -> float:
    stat = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB")))
    mse = sum(rms * rms for rms in stat.rms) / 3
    return 99.0 if mse == 0 else 10 * math.log10(255 * 255 / mse)


def test_crop_of_a_reduced_jpeg_decode_is_aligned() -> None:
    # Orientation 6 and a 1/4 DCT-scaled decode: the box must still land on the same pixels.
    data = images.oriented(6, "JPEG", images.photo(1200, 1600))
    upright = ImageOps.exif_transpose(decoded(data))
    out = io.BytesIO()
    crop(data, CropBox(200, 300, 800, 600), out, format="PNG", max_width=200)
    ours = decoded(out.getvalue())
    assert ours.size == (200, 150)

    def reference(dx: int) -> Image.Image:
        return upright.crop((200 + dx, 300, 1000 + dx, 900)).resize(
            (200, 150), Image.Resampling.LANCZOS
        )

    assert psnr(ours, reference(0)) > 35
    assert psnr(ours, reference(0)) > psnr(ours, reference(8)) + 3


# -- variants -------------------------------------------------------------------------------------


def test_default_presets_of_a_large_photo() -> None:
    outs = {recipe.name: io.BytesIO() for recipe in DEFAULT_RECIPES}
    variants = render_variants(images.big_jpeg(), DEFAULT_RECIPES, outs)
    assert list(variants) == ["thumbnail", "small", "medium", "large"]
    expected = {
        "thumbnail": (256, 256),
        "small": (640, 480),
        "medium": (1280, 960),
        "large": (1920, 1440),
    }
    for name, variant in variants.items():
        image = decoded(outs[name].getvalue())
        assert (variant.width, variant.height) == image.size == expected[name]
        assert (variant.format, variant.mime_type, image.format) == ("WEBP", "image/webp", "WEBP")
        assert variant.size == len(outs[name].getvalue())


def test_process_image_gives_facts_and_variants_from_one_decode() -> None:
    outs = {recipe.name: io.BytesIO() for recipe in DEFAULT_RECIPES}
    processed = process_image(images.big_jpeg(), DEFAULT_RECIPES, outs)
    assert (processed.facts.width, processed.facts.height) == (2400, 1800)
    assert set(processed.variants) == {recipe.name for recipe in DEFAULT_RECIPES}


def test_no_upscaling() -> None:
    data = images.jpeg(200, 150)
    outs = {recipe.name: io.BytesIO() for recipe in DEFAULT_RECIPES}
    variants = render_variants(data, DEFAULT_RECIPES, outs)
    assert {(v.width, v.height) for v in variants.values()} == {(200, 150)}
    # Cover with a box larger on one side only: each side is the smaller of box and image.
    variant, image = rendered(data, VariantRecipe("v", 100, 400, Fit.COVER))
    assert (variant.width, variant.height) == image.size == (100, 150)


@pytest.mark.parametrize(
    ("recipe", "size"),
    [
        (VariantRecipe("w", width=100), (100, 75)),
        (VariantRecipe("h", height=30), (40, 30)),
        (VariantRecipe("box", 100, 50), (67, 50)),
        (VariantRecipe("cover", 100, 50, Fit.COVER), (100, 50)),
    ],
)
def test_fit_inside_and_cover(recipe: VariantRecipe, size: tuple[int, int]) -> None:
    variant, image = rendered(images.jpeg(320, 240), recipe)
    assert (variant.width, variant.height) == image.size == size


@pytest.mark.parametrize(
    ("data", "fmt", "expected"),
    [
        (images.jpeg(), "JPEG", "JPEG"),
        (images.jpeg(), "PNG", "PNG"),
        (images.jpeg(), "ORIGINAL", "JPEG"),
        (images.animated_gif(), "ORIGINAL", "PNG"),
        (images.encode(images.photo(40, 30), "BMP"), "ORIGINAL", "PNG"),
        (images.encode(images.photo(40, 30), "TIFF"), "ORIGINAL", "JPEG"),
        (images.animated_webp(), "ORIGINAL", "WEBP"),
        (images.png_rgba(), "ORIGINAL", "PNG"),
    ],
)
def test_output_formats(data: bytes, fmt: str, expected: str) -> None:
    variant, image = rendered(data, VariantRecipe("v", 32, 32, format=fmt))
    assert variant.format == image.format == expected
    assert variant.mime_type == f"image/{expected.lower()}"


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG", "PNG"])
def test_variants_carry_no_exif_and_no_gps(fmt: str) -> None:
    data = images.gps_jpeg()
    assert decoded(data).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the source has a position
    out = io.BytesIO()
    render_variant(data, VariantRecipe("v", 100, 100, format=fmt), out)
    assert has_no_metadata(out.getvalue())
    assert b"GPS" not in out.getvalue() and b"TestCam" not in out.getvalue()


def test_alpha_is_kept_for_webp_and_png_and_flattened_on_white_for_jpeg() -> None:
    data = images.png_rgba()
    for fmt in ("WEBP", "PNG"):
        _, image = rendered(data, VariantRecipe("v", 40, 40, format=fmt))
        assert image.mode == "RGBA"
        assert image.getpixel((2, 2))[3] == 0
        assert near(image.getpixel((37, 15)), (*BLUE, 128), 25)
    _, image = rendered(data, VariantRecipe("v", 40, 40, format="JPEG"))
    assert image.mode == "RGB"
    assert near(image.getpixel((2, 2)), (255, 255, 255), 6)
    assert near(image.getpixel((37, 15)), (138, 138, 238), 15)  # half blue over white


def test_opaque_alpha_is_dropped() -> None:
    data = images.encode(Image.new("RGBA", (20, 20), (*RED, 255)), "PNG")
    _, image = rendered(data, VariantRecipe("v", 10, 10, format="PNG"))
    assert image.mode == "RGB"


@pytest.mark.parametrize("data", [images.animated_gif(), images.animated_webp()])
def test_animated_variants_are_the_first_frame(data: bytes) -> None:
    _, image = rendered(data, VariantRecipe("v", 20, 20, format="PNG"))
    assert getattr(image, "n_frames", 1) == 1
    assert near(image.convert("RGB").getpixel((5, 5)), RED, 25)


def test_cmyk_becomes_rgb_with_the_right_colours() -> None:
    for data in (images.cmyk_jpeg(), images.cmyk_jpeg(images.fake_cmyk_profile())):
        for fmt in ("WEBP", "JPEG"):
            _, image = rendered(data, VariantRecipe("v", 24, 24, format=fmt))
            assert image.mode == "RGB"
            assert near(image.getpixel((5, 5)), (255, 0, 0), 30)
            assert "icc_profile" not in image.info  # a CMYK profile on RGB pixels would be wrong


def test_an_srgb_profile_is_kept() -> None:
    profile = images.srgb_profile()
    data = images.jpeg(64, 48, icc_profile=profile)
    for fmt in ("WEBP", "JPEG", "PNG"):
        _, image = rendered(data, VariantRecipe("v", 32, 32, format=fmt))
        assert image.info.get("icc_profile") == profile


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    _, image = rendered(images.png16(), VariantRecipe("v", 64, 64, format="PNG"))
    assert image.mode == "L"
    row = [image.getpixel((x, 8)) for x in (0, 32, 63)]
    assert row[0] <= 2 and 118 <= row[1] <= 138 and row[2] >= 253


def test_greyscale() -> None:
    _, webp = rendered(images.greyscale_jpeg(), VariantRecipe("v", 32, 32))
    assert webp.mode == "RGB"  # WebP has no grey mode
    r, g, b = webp.getpixel((10, 10))
    assert abs(r - g) <= 3 and abs(g - b) <= 3
    _, jpeg = rendered(images.greyscale_jpeg(), VariantRecipe("v", 32, 32, format="JPEG"))
    assert jpeg.mode == "L"


def test_file_objects_and_paths_are_sources(tmp_path) -> None:
    data = images.jpeg(320, 240)
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        sizes = {
            render_variant(source, THUMB, io.BytesIO()).size
            for source in (data, bytearray(data), memoryview(data), path, str(path), handle)
        }
    assert len(sizes) == 1


def test_render_variants_checks_its_outputs() -> None:
    with pytest.raises(ValueError, match="no output file"):
        render_variants(images.jpeg(), DEFAULT_RECIPES, {})
    with pytest.raises(ValueError, match="unique"):
        render_variants(images.jpeg(), [THUMB, THUMB], {THUMB.name: io.BytesIO()})


# -- crop and resize ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "field"),
    [
        (CropBox(0, 0, 321, 10), "box.width"),
        (CropBox(300, 0, 30, 10), "box.width"),
        (CropBox(320, 0, 1, 1), "box.x"),
        (CropBox(0, 230, 10, 11), "box.height"),
        (CropBox(0, 240, 10, 1), "box.y"),
        (CropBox(-1, 0, 10, 10), "box.x"),
        (CropBox(0, 0, 0, 10), "box.width"),
        ((0, 0, 10, 1.5), "box.height"),
        ((0, 0, 10), "box"),
    ],
)
def test_crop_box_outside_the_image_names_the_field(box: object, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        crop(images.jpeg(320, 240), box, io.BytesIO())  # type: ignore[arg-type]
    assert field in caught.value.fields


def test_crop_bounds_follow_the_displayed_orientation() -> None:
    data = images.oriented(6)  # stored 40x60, displayed 60x40
    crop(data, (0, 0, 60, 40), io.BytesIO())
    with pytest.raises(ValidationError) as caught:
        crop(data, (0, 0, 40, 60), io.BytesIO())
    assert "box.height" in caught.value.fields


def test_crop_with_a_maximum_size_and_format() -> None:
    out = io.BytesIO()
    variant = crop(
        images.big_jpeg(), (100, 100, 1500, 1100), out, format="JPEG", quality=70, max_width=400
    )
    assert (variant.width, variant.height, variant.format) == (400, 293, "JPEG")
    assert decoded(out.getvalue()).size == (400, 293)
    with pytest.raises(ValidationError) as caught:
        crop(images.jpeg(), (0, 0, 8, 8), io.BytesIO(), format="GIF")
    assert "format" in caught.value.fields
    with pytest.raises(ValidationError) as caught:
        crop(images.jpeg(), (0, 0, 8, 8), io.BytesIO(), max_width=0)
    assert "maxWidth" in caught.value.fields


def test_resize() -> None:
    out = io.BytesIO()
    variant = resize(images.jpeg(320, 240), out, width=100, fit="inside", format="PNG")
    assert (variant.width, variant.height, variant.format) == (100, 75, "PNG")
    for kwargs, field in (
        ({"width": 100, "fit": "stretch"}, "fit"),
        ({}, "width"),
        ({"width": 100, "quality": 0}, "quality"),
        ({"width": 100, "height": None, "fit": "cover"}, "fit"),
    ):
        with pytest.raises(ValidationError) as caught:
            resize(images.jpeg(), io.BytesIO(), **kwargs)  # type: ignore[arg-type]
        assert field in caught.value.fields


# -- optimize -------------------------------------------------------------------------------------


def test_optimize_a_high_quality_jpeg_with_gps_and_orientation() -> None:
    exif = images.exif_with(6, gps=True)
    data = images.encode(images.photo(400, 300), "JPEG", quality=98, exif=exif)
    out = io.BytesIO()
    result = optimize(data, out)
    assert result.improved and result.format == "JPEG"
    assert result.original_size == len(data)
    assert result.optimized_size == len(out.getvalue()) < len(data)
    assert result.ratio == round(result.optimized_size / result.original_size, 4) < 1
    assert has_no_metadata(out.getvalue())
    assert decoded(out.getvalue()).size == (300, 400)  # the orientation is in the pixels now
    assert (result.width, result.height) == (300, 400)


def test_optimize_keeps_an_original_it_cannot_improve() -> None:
    small_jpeg = images.jpeg(320, 240, quality=40, optimize=True, progressive=True)
    for data in (small_jpeg, images.animated_gif()):
        out = io.BytesIO()
        result = optimize(data, out)
        assert not result.improved
        assert (result.ratio, result.optimized_size) == (1.0, len(data))
        assert result.reason
        assert out.getvalue() == b""


def test_optimize_png_and_lossless_webp() -> None:
    png = images.encode(images.photo(120, 90), "PNG", compress_level=0)
    out = io.BytesIO()
    result = optimize(png, out)
    assert result.improved and decoded(out.getvalue()).tobytes() == decoded(png).tobytes()

    photo = images.photo(64, 48)
    lossless = images.encode(photo, "WEBP", lossless=True, method=0)
    out = io.BytesIO()
    result = optimize(lossless, out)
    assert result.improved
    assert out.getvalue()[12:16] == b"VP8L"  # still lossless, and exact
    assert decoded(out.getvalue()).tobytes() == decoded(lossless).tobytes()

    lossy = images.encode(photo, "WEBP", quality=100, method=0)
    out = io.BytesIO()
    assert optimize(lossy, out).improved
    assert out.getvalue()[12:16] == b"VP8 "


# -- recipes --------------------------------------------------------------------------------------


def test_recipe_fingerprint_is_stable_and_covers_every_field() -> None:
    base = VariantRecipe("thumbnail", 256, 256, Fit.COVER, "WEBP", 80, 1)
    assert base == THUMB
    assert base.fingerprint == VariantRecipe("thumbnail", 256, 256, "cover", "webp").fingerprint
    assert base.fingerprint == "935fb103f88de21b"  # stored variants are named by it: keep it
    changed = [
        replace(base, name="thumb"),
        replace(base, width=255),
        replace(base, height=255),
        replace(base, fit=Fit.INSIDE),
        replace(base, format="JPEG"),
        replace(base, quality=81),
        replace(base, version=2),
    ]
    fingerprints = {recipe.fingerprint for recipe in changed}
    assert len(fingerprints) == len(changed) and base.fingerprint not in fingerprints


def test_recipe_normalises_its_fields() -> None:
    recipe = VariantRecipe("x", 10, format=None, fit="INSIDE")  # type: ignore[arg-type]
    assert (recipe.format, recipe.fit) == ("ORIGINAL", Fit.INSIDE)
    assert VariantRecipe("x", 10, format="jpg").format == "JPEG"


CONFIG = {
    "thumbnail": {
        "width": 256,
        "height": 256,
        "fit": "cover",
        "format": "WEBP",
        "quality": 80,
        "version": 1,
    },
    "small": {"width": 640, "fit": "inside"},
    "medium": {"width": 1280},
    "large": {"width": 1920, "format": "JPEG", "quality": 85, "version": 3},
}


def test_recipes_from_config() -> None:
    recipes = recipes_from_config(CONFIG)
    assert recipes == recipes_from_config({"variants": CONFIG})
    assert [r.name for r in recipes] == ["thumbnail", "small", "medium", "large"]
    assert recipes[0] == THUMB
    assert recipes[1] == VariantRecipe("small", 640)
    assert (recipes[3].format, recipes[3].quality, recipes[3].version) == ("JPEG", 85, 3)
    assert recipes_from_config({}) == []


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"small": {"width": 640, "fit": "contain"}}, "variants.small.fit"),
        ({"small": {"width": 640, "format": "GIF"}}, "variants.small.format"),
        ({"small": {"width": 0}}, "variants.small.width"),
        ({"small": {"width": "640"}}, "variants.small.width"),
        ({"small": {"width": True}}, "variants.small.width"),
        ({"small": {"width": 20000}}, "variants.small.width"),
        ({"small": {"height": -1}}, "variants.small.height"),
        ({"small": {"fit": "inside"}}, "variants.small.width"),
        ({"small": {"width": 640, "quality": 101}}, "variants.small.quality"),
        ({"small": {"width": 640, "version": 0}}, "variants.small.version"),
        ({"small": {"width": 640, "widht": 1}}, "variants.small"),
        ({"thumb": {"width": 256, "fit": "cover"}}, "variants.thumb.fit"),
        ({"bad name!": {"width": 1}}, "variants.bad name!"),
        ({"small": 640}, "variants.small"),
        (["small"], "variants"),
    ],
)
def test_recipes_from_config_errors(config: object, where: str) -> None:
    with pytest.raises(ValueError) as caught:
        recipes_from_config(config)  # type: ignore[arg-type]
    assert isinstance(caught.value, RecipeError)
    assert caught.value.field == where
    assert str(caught.value).startswith(where + ": ")


# -- BlurHash -------------------------------------------------------------------------------------

_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def reference_blurhash(image: Image.Image, xc: int, yc: int) -> str:
    """A line-by-line transcription of the reference C encoder (woltapp/blurhash, encode.c)."""
    w, h = image.size
    px = image.convert("RGB").load()

    def to_linear(v: int) -> float:
        v = v / 255
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    def to_srgb(v: float) -> int:
        v = max(0.0, min(1.0, v))
        if v <= 0.0031308:
            return int(v * 12.92 * 255 + 0.5)
        return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)

    def enc(value: int, length: int) -> str:
        return "".join(_BASE83[(value // 83 ** (length - 1 - i)) % 83] for i in range(length))

    factors = []
    for j in range(yc):
        for i in range(xc):
            norm = 1 if i == j == 0 else 2
            r = g = b = 0.0
            for y in range(h):
                for x in range(w):
                    basis = math.cos(math.pi * i * x / w) * math.cos(math.pi * j * y / h)
                    pr, pg, pb = px[x, y]
                    r += basis * to_linear(pr)
                    g += basis * to_linear(pg)
                    b += basis * to_linear(pb)
            scale = norm / (w * h)
            factors.append((r * scale, g * scale, b * scale))
    dc, ac = factors[0], factors[1:]
    out = enc((xc - 1) + (yc - 1) * 9, 1)
    if ac:
        actual = max(abs(v) for f in ac for v in f)
        quantised = int(max(0, min(82, math.floor(actual * 83 - 0.5))))
        maximum = (quantised + 1) / 83
        out += enc(quantised, 1)
    else:
        maximum = 1
        out += enc(0, 1)
    out += enc((to_srgb(dc[0]) << 16) + (to_srgb(dc[1]) << 8) + to_srgb(dc[2]), 4)
    for f in ac:
        q = [
            int(max(0, min(18, math.floor(math.copysign(abs(v / maximum) ** 0.5, v) * 9 + 9.5))))
            for v in f
        ]
        out += enc(q[0] * 19 * 19 + q[1] * 19 + q[2], 2)
    return out


def test_blurhash_known_values() -> None:
    # Published test vectors of another implementation (Sija/blurhash.cr spec), which follow
    # from the algorithm: a white pixel with 4x4 components, and any black image with 4x3.
    assert blurhash(Image.new("RGB", (1, 1), "white"), 4, 4) == (
        "U~TSUA~q~q~q~q~q~q~q~q~q~q~q~q~q~q~q"
    )
    assert blurhash(Image.new("RGB", (32, 24), "black")) == "L00000fQfQfQfQfQfQfQfQfQfQfQ"


@pytest.mark.parametrize(("xc", "yc"), [(4, 3), (1, 1), (9, 9), (3, 5)])
def test_blurhash_matches_the_reference_encoder(xc: int, yc: int) -> None:
    rng = random.Random(xc * 10 + yc)
    image = Image.frombytes("RGB", (20, 15), rng.randbytes(20 * 15 * 3))
    assert blurhash(image, xc, yc) == reference_blurhash(image, xc, yc)
    photo = images.photo(32, 24)
    assert blurhash(photo, xc, yc) == reference_blurhash(photo, xc, yc)


def decode_blurhash(value: str, width: int, height: int) -> list[list[tuple[float, ...]]]:
    """The reference decoder, in linear light (enough to compare sides)."""

    def num(s: str) -> int:
        n = 0
        for ch in s:
            n = n * 83 + _BASE83.index(ch)
        return n

    size = num(value[0])
    xc, yc = size % 9 + 1, size // 9 + 1
    maximum = (num(value[1]) + 1) / 83
    dc = num(value[2:6])
    colours = [tuple(((dc >> s) & 255) / 255 for s in (16, 8, 0))]
    for k in range(1, xc * yc):
        v = num(value[4 + 2 * k : 6 + 2 * k])
        q = (v // 361, (v // 19) % 19, v % 19)
        colours.append(tuple(math.copysign(((c - 9) / 9) ** 2, c - 9) * maximum for c in q))
    rows = []
    for y in range(height):
        row = []
        for x in range(width):
            pixel = [0.0, 0.0, 0.0]
            for j in range(yc):
                for i in range(xc):
                    basis = math.cos(math.pi * x * i / width) * math.cos(math.pi * y * j / height)
                    for c in range(3):
                        pixel[c] += colours[j * xc + i][c] * basis
            row.append(tuple(pixel))
        rows.append(row)
    return rows


def test_blurhash_decodes_to_the_right_shape() -> None:
    image = Image.new("RGB", (64, 48), RED)
    image.paste(BLUE, (32, 0, 64, 48))
    facts = image_facts(images.encode(image, "PNG"))
    pixels = decode_blurhash(facts.blurhash, 8, 6)
    left, right = pixels[3][0], pixels[3][7]
    assert left[0] > left[2] and right[2] > right[0]


def test_blurhash_rejects_bad_components() -> None:
    with pytest.raises(ValueError):
        blurhash(Image.new("RGB", (4, 4)), 10, 3)
