"""Real image files for the imaging tests, made with Pillow at test time.

Each maker returns the file's bytes. Colours are chosen far apart (red, green, blue, grey) so a
test can tell corners, frames and channels apart after lossy encoding.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from pathlib import Path

from PIL import ExifTags, Image, ImageCms, ImageDraw

DATA = Path(__file__).parent / "data"

RED = (220, 20, 20)
GREEN = (20, 200, 20)
BLUE = (20, 20, 220)
GREY = (128, 128, 128)

# The transpose that undoes each EXIF orientation's transform (ImageOps.exif_transpose applies
# the forward one): storing ``displayed.transpose(_INVERSE[o])`` with orientation o shows
# ``displayed`` again.
_INVERSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: compresses like a photo, not like a flat test card."""
    gradient = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize((width, height)),
            Image.linear_gradient("L").rotate(90).resize((width, height)),
            Image.radial_gradient("L").resize((width, height)),
        ],
    )
    noise = Image.effect_noise((width, height), 24 + seed).convert("RGB")
    return Image.blend(gradient, noise, 0.15)


def marked(width: int = 60, height: int = 40) -> Image.Image:
    """Grey with a red top-left and a green top-right corner block, as it should be displayed.

    Two markers tell every one of the eight orientations apart (one would not: a transpose
    leaves the top-left corner where it is).
    """
    image = Image.new("RGB", (width, height), GREY)
    draw = ImageDraw.Draw(image)
    block_w, block_h = width // 3, height // 3
    draw.rectangle((0, 0, block_w - 1, block_h - 1), fill=RED)
    draw.rectangle((width - block_w, 0, width - 1, block_h - 1), fill=GREEN)
    return image


def exif_with(orientation: int | None = None, gps: bool = False) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    if gps:
        exif[ExifTags.IFD.GPSInfo] = {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.5),
            ExifTags.GPS.GPSLongitudeRef: "E",
            ExifTags.GPS.GPSLongitude: (13.0, 24.0, 36.0),
        }
    return exif


def oriented(orientation: int, fmt: str = "JPEG", displayed: Image.Image | None = None) -> bytes:
    """``displayed`` (default :func:`marked`) stored so that ``orientation`` shows it upright."""
    displayed = displayed or marked()
    method = _INVERSE.get(orientation)
    stored = displayed if method is None else displayed.transpose(method)
    params: dict[str, object] = {"exif": exif_with(orientation)}
    if fmt == "JPEG":
        params["quality"] = 95
    return encode(stored, fmt, **params)


def jpeg(width: int = 64, height: int = 48, quality: int = 90, **params: object) -> bytes:
    return encode(photo(width, height), "JPEG", quality=quality, **params)


def gps_jpeg() -> bytes:
    return encode(photo(320, 240), "JPEG", quality=90, exif=exif_with(1, gps=True))


@functools.cache
def big_jpeg() -> bytes:
    """2400x1800: larger than every default preset."""
    return encode(photo(2400, 1800), "JPEG", quality=85)


def png_rgba() -> bytes:
    """Transparent left half, half-transparent blue right half."""
    image = Image.new("RGBA", (80, 60), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((40, 0, 79, 59), fill=(*BLUE, 128))
    return encode(image, "PNG")


def animated_gif(frames: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE)) -> bytes:
    images = [
        Image.new("RGB", (40, 30), color).convert("P", palette=Image.Palette.ADAPTIVE)
        for color in frames
    ]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def animated_webp(frames: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE)) -> bytes:
    images = [Image.new("RGB", (40, 30), color) for color in frames]
    return encode(images[0], "WEBP", save_all=True, append_images=images[1:], duration=100)


def cmyk_jpeg(icc_profile: bytes | None = None) -> bytes:
    """Pure red in CMYK (no cyan, full magenta and yellow); Pillow writes an Adobe marker."""
    image = Image.new("CMYK", (48, 32), (0, 255, 255, 0))
    params: dict[str, object] = {"quality": 95}
    if icc_profile is not None:
        params["icc_profile"] = icc_profile
    return encode(image, "JPEG", **params)


def fake_cmyk_profile() -> bytes:
    """128 bytes that declare a CMYK profile in the ICC header but are not a valid profile."""
    header = bytearray(128)
    struct.pack_into(">I", header, 0, 128)
    header[12:16] = b"prtr"
    header[16:20] = b"CMYK"
    header[20:24] = b"Lab "
    header[36:40] = b"acsp"
    return bytes(header)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png16() -> bytes:
    """A 16-bit greyscale horizontal ramp from 0 to 65535 (mode I;16)."""
    width, height = 64, 16
    image = Image.new("I;16", (width, height))
    ramp = [round(x * 65535 / (width - 1)) for x in range(width)]
    image.putdata(ramp * height)
    return encode(image, "PNG")


def greyscale_jpeg() -> bytes:
    return encode(photo(64, 48).convert("L"), "JPEG", quality=90)


def one_pixel(fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", (1, 1), RED), fmt)


def mpo() -> bytes:
    """A camera-style multi-picture JPEG: two frames, a JPEG to anything reading only the first."""
    first, second = photo(64, 48), photo(64, 48, seed=5)
    return encode(first, "MPO", save_all=True, append_images=[second])


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR (correct CRCs) claiming ``width`` x ``height``, followed
    by a few bytes of pixel data: enough to open, far too little to decode."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(64)))
        + chunk(b"IEND", b"")
    )


def jar() -> bytes:
    """A minimal Java archive: what a GIFAR appends to a GIF."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nMain-Class: Evil\n")
        archive.writestr("Evil.class", b"\xca\xfe\xba\xbe" + bytes(64))
    return buffer.getvalue()


SCRIPT = b"<script>alert(document.cookie)</script>"


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def data_file(name: str) -> bytes:
    """A committed sample from tests/data."""
    return (DATA / name).read_bytes()


def png_broken_stream() -> bytes:
    """A PNG whose header is sound and whose compressed pixel data is garbage (its CRC fixed up,
    so only the decoder can tell)."""
    data = encode(photo(300, 200), "PNG")
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    body = bytearray(data[at + 4 : at + 4 + length])
    body[10:30] = b"\xff" * 20
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
    return data[: at + 4] + bytes(body) + crc + data[at + 8 + length :]


# -- ICC profiles of wide-gamut RGB spaces (PIL.ImageCms builds only sRGB, LAB and XYZ) ---------

# D50-adapted primaries (the PCS white) and tone curves of the published specifications.
_RGB_SPACES = {
    "Display P3": (((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841)),
                   2.2),
    "Adobe RGB (1998)": (((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609),
                          (0.1492, 0.0632, 0.7446)), 563 / 256),
}  # fmt: skip


def rgb_profile(name: str) -> bytes:
    """A version 2 matrix/TRC display profile of ``name`` ("Display P3", "Adobe RGB (1998)"),
    byte for byte what ICC.1:2001 prescribes, readable by LittleCMS (so by ImageCms)."""
    primaries, gamma = _RGB_SPACES[name]

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    def desc(text: str) -> bytes:
        ascii_text = text.encode("ascii") + b"\0"
        return (
            b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text
            + bytes(4) + bytes(4) + bytes(2) + bytes(1) + bytes(67)
        )  # fmt: skip

    curve = b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256))
    tags = [
        (b"desc", desc(name)),
        (b"cprt", b"text" + bytes(4) + b"No copyright, test data\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*primaries[0])),
        (b"gXYZ", xyz(*primaries[1])),
        (b"bXYZ", xyz(*primaries[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        padded = body + bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += padded
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ "
        + bytes(12) + b"acsp" + b"APPL" + bytes(4) + bytes(4) + bytes(4) + bytes(8) + bytes(4)
        + s15(0.9642) + s15(1.0) + s15(0.8249) + b"lcms" + bytes(16) + bytes(28)
    )  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data
