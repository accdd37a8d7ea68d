"""Image processing for media: facts, placeholders, variants, crops and re-encoding.

Pure, synchronous CPU work on a file path, bytes or a binary file object; results are plain
dataclasses and encoded bytes written to a binary file object the caller provides (so they can be
streamed to storage). Nothing here touches nameko, the database or storage; callers run these
functions in a thread pool (``eventlet.tpool``), where Pillow releases the GIL while it decodes,
resamples and encodes.

Decoding policy (every entry point goes through it):

* Pillow is only ever called as ``Image.open(fp, formats=limits.formats)``: the decoders of
  :data:`PILLOW_FORMATS` (AVIF and HEIF where this machine has their decoders, see
  :data:`DECODERS`) are the only code that reads untrusted bytes. EPS (Ghostscript), PDF,
  SVG and every other format Pillow knows are refused before any parser of theirs runs; SVG is
  never rasterised.
* The pixel count from the header is checked against ``limits.max_pixels`` before any pixel is
  decoded; Pillow's own decompression-bomb check (a warning turned into an error here, and an
  error at twice its limit) backs it up.
* Truncated or damaged files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set.
* Every failure to read an image is :class:`UnsupportedMediaType` with a readable message, never
  a bare Pillow exception. The plain contract class is raised on purpose: errors cross RPC by
  class name, so a subclass would reach callers as an unknown ``RemoteError``.

Memory stays bounded for JPEG, the format of nearly every large photo: it is decoded with
``Image.draft`` at the smallest DCT scale (1/2, 1/4 or 1/8) that still gives at least the pixels
the largest requested output needs (:data:`render.DRAFT_GAP`), so a 256 px thumbnail of a 12 MP
photo decodes 500x375 pixels (0.75 MB) instead of 4000x3000 (48 MB). The other formats have no
reduced decode and are decoded in full, which ``max_pixels`` bounds.

Outputs:

* WebP is the default output format: every current browser displays it and it is 25-35% smaller
  than JPEG at the same visual quality. A recipe may ask for JPEG or PNG, or ``ORIGINAL`` for the
  web-safe equivalent of the source (JPEG stays JPEG, WebP stays WebP, PNG, GIF and BMP become PNG,
  TIFF becomes JPEG, or PNG if it has transparency).
* Outputs carry no metadata at all: no EXIF (so no GPS position), no XMP, no comments, and no
  bytes the source carried after its image data (a ZIP/JAR or a script appended to a GIF or JPEG
  is gone, because the pixels are re-encoded). An ICC profile is kept when it matches the output
  colour space and is small (sRGB, Display P3, ...). CMYK is converted to RGB, through its
  embedded profile when it has one.
* Orientation: the EXIF orientation is read once from the source, the image is shrunk in its
  stored orientation (cheaper) and then transposed exactly like ``ImageOps.exif_transpose``
  would, so outputs are upright and need no orientation tag. (``exif_transpose`` itself is not
  called on the shrunk copy: a resized TIFF no longer carries its orientation tag.) Every size
  and crop box in this module is in displayed, post-orientation pixels.
* Alpha is kept for WebP and PNG (dropped when fully opaque) and flattened onto white for JPEG.
  Every decoded mode (16-bit, 32-bit integer and float grey, palette, bilevel, CMYK, YCbCr,
  LAB, HSV, premultiplied alpha) is brought to 8-bit L, LA, RGB or RGBA before resampling,
  by the rules of :func:`colour._canonical` (docs/rpc.md has the table).
* Animated GIF, WebP and PNG: facts count the frames, but variants, crops and placeholders are
  made from the first frame only (a still image), and ``optimize`` leaves animations as they are.
* Images are never enlarged. ``inside`` fits the image in the box; ``cover`` fills the box and
  crops the centre. When the source is smaller than a ``cover`` box, each side is the smaller of
  the box's and the image's, so a source smaller than the box in both directions keeps its
  dimensions.

Modules: ``gate`` (the decoders allowed, the pixel limit, Pillow's errors as the contract's),
``recipes`` (what a variant is, from config), ``colour`` (every mode to 8 bits, ICC profiles),
``render`` (plans in stored pixels, the draft decode, orientation), ``encode`` (output bytes
without metadata), ``facts`` and ``placeholders`` (BlurHash, LQIP), and ``operations`` (the
public entry points). Every public name is imported from this package, not from its modules.
"""

from services.media.processing.imaging.encode import RenderedVariant
from services.media.processing.imaging.facts import ImageFacts
from services.media.processing.imaging.gate import (
    DECODED_MIME_TYPES,
    DECODERS,
    DEFAULT_LIMITS,
    MAX_IMAGE_PIXELS,
    MIME_TYPES,
    PILLOW_FORMATS,
    ImageSource,
    ImagingLimits,
    header_size,
)
from services.media.processing.imaging.operations import (
    CropBox,
    OptimizeResult,
    ProcessedImage,
    crop,
    image_facts,
    optimize,
    process_image,
    render_variant,
    render_variants,
    resize,
)
from services.media.processing.imaging.placeholders import blurhash
from services.media.processing.imaging.recipes import (
    DEFAULT_RECIPES,
    MAX_VARIANT_SIDE,
    OUTPUT_FORMATS,
    Fit,
    RecipeError,
    VariantRecipe,
    recipes_from_config,
)

# Not in __all__, but part of every stored variant's fingerprint that callers record.
from services.media.processing.imaging.recipes import RENDER_VERSION as RENDER_VERSION

__all__ = [
    "DECODED_MIME_TYPES",
    "DECODERS",
    "DEFAULT_LIMITS",
    "DEFAULT_RECIPES",
    "MAX_IMAGE_PIXELS",
    "MAX_VARIANT_SIDE",
    "MIME_TYPES",
    "OUTPUT_FORMATS",
    "PILLOW_FORMATS",
    "CropBox",
    "Fit",
    "ImageFacts",
    "ImageSource",
    "ImagingLimits",
    "OptimizeResult",
    "ProcessedImage",
    "RecipeError",
    "RenderedVariant",
    "VariantRecipe",
    "blurhash",
    "crop",
    "header_size",
    "image_facts",
    "optimize",
    "process_image",
    "recipes_from_config",
    "render_variant",
    "render_variants",
    "resize",
]
