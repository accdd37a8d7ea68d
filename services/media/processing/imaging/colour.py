"""Colour: every decoded mode to an 8-bit working mode, and the ICC profile that follows it.

:func:`_canonical` brings any mode Pillow decodes to L, LA, RGB or RGBA (docs/rpc.md has the
table); :func:`_for_format` then fits the working image to an output format (alpha dropped when
opaque, flattened onto white for JPEG, grey widened for WebP) with the profile worth embedding.
"""

from __future__ import annotations

import io
from typing import Final, cast

from PIL import Image, ImageCms

# An ICC profile bigger than this is not copied into every variant; the pixels are converted
# to sRGB instead. Real display profiles (sRGB, Display P3, Adobe RGB) are 0.5-4 KB.
MAX_KEPT_ICC_BYTES: Final = 64 * 1024

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
