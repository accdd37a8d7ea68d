"""The one gate every image goes through before Pillow decodes a pixel of it.

Pillow is only ever called as ``Image.open(fp, formats=limits.formats)`` (:func:`_open`): the
decoders of :data:`PILLOW_FORMATS` are the only code that reads untrusted bytes, the header's
pixel count is checked against ``limits.max_pixels`` before decoding, and every failure of
Pillow's becomes :class:`UnsupportedMediaType` (:func:`_decoding`).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Final, TypeAlias

from PIL import Image, ImageFile, UnidentifiedImageError, features

from services.media.exceptions import UnsupportedMediaType
from services.media.processing.imaging.recipes import _is_int


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


def header_size(source: ImageSource, *, limits: ImagingLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """Stored width and height from the header alone (no pixel is decoded), through the same
    gate as every other entry point: allow-listed decoders, and the pixel limit enforced.
    Raises :class:`UnsupportedMediaType` saying why a file is refused."""
    with _open(source, limits) as opened:
        width, height = opened.image.size
    return width, height


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
