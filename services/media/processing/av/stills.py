"""Still images of media: a video's poster frame (ffmpeg) and a PDF's first page (pdftoppm).

Each tool writes into the call's scratch directory; the image is checked with Pillow (it must
open and decode as the format asked for) before it is moved to where the caller wants it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from PIL import Image

from services.media.processing.av.probe import probe_av
from services.media.processing.av.tools import (
    ProbeError,
    ProbeTools,
    _failure,
    _ffmpeg_input_restrictions,
    _file_url,
    _input_file,
    _publish,
    _run,
    _scratch,
)

__all__ = ["DEFAULT_MAX_PX", "pdf_preview", "poster_frame", "poster_time"]

DEFAULT_MAX_PX = 1280
"""The longest side, in pixels, of a poster frame or a PDF preview."""

# A video shorter than this gets its poster from its first frame.
_SHORT_VIDEO_SECONDS = 2.0
_POSTER_FRACTION = 0.1
_IMAGE_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def poster_time(duration: float | None) -> float:
    """Where to take a video's poster frame from, in seconds: ~10% in, the start of short ones."""
    if duration is None or not math.isfinite(duration) or duration < _SHORT_VIDEO_SECONDS:
        return 0.0
    return round(duration * _POSTER_FRACTION, 3)


def poster_frame(
    path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    tools: ProbeTools,
    at_seconds: float | None = None,
    max_px: int = DEFAULT_MAX_PX,
) -> tuple[int, int] | None:
    """Write one frame of a video to ``out_path`` (JPEG, or PNG if it ends in ``.png``), no larger
    than ``max_px`` on its longer side and rotated as a player would show it.

    The frame is taken at ``at_seconds``, by default `poster_time` of the duration (which needs
    ffprobe; without it the first frame). Returns the image's (width, height), or None if ffmpeg
    is missing (nothing is written then). Raises `ProbeError` when no frame can be decoded, and
    the errors of `probe_av`.
    """
    if tools.ffmpeg is None:
        return None
    source = _input_file(path)
    target = Path(out_path)
    image_format = _image_format(target)
    _check_max_px(max_px)
    if at_seconds is None:
        facts = probe_av(source, tools)
        at_seconds = poster_time(facts.duration if facts else None)
    if not math.isfinite(at_seconds) or at_seconds < 0:
        raise ValueError("at_seconds must be a non-negative number")
    suffix = ".png" if image_format == "PNG" else ".jpg"
    with _scratch(tools) as workdir:
        frame = workdir / f"poster{suffix}"
        times = (at_seconds, 0.0) if at_seconds > 0 else (0.0,)
        for at in times:
            argv = _poster_argv(tools, source, frame, at, max_px, image_format)
            result = _run("ffmpeg", argv, tools, workdir)
            if result.returncode != 0:
                raise ProbeError(_failure("ffmpeg", result, source))
            # A time past the last frame (a lying duration) makes ffmpeg succeed without output.
            if frame.is_file() and frame.stat().st_size > 0:
                break
        else:
            raise ProbeError("ffmpeg found no video frame to decode")
        size = _check_image(frame, image_format, "ffmpeg")
        _publish(frame, target)
    return size


def pdf_preview(
    path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    tools: ProbeTools,
    max_px: int = DEFAULT_MAX_PX,
) -> tuple[int, int] | None:
    """Render page 1 of a PDF to ``out_path`` (PNG, or JPEG if it ends in ``.jpg``/``.jpeg``),
    ``max_px`` on its longer side.

    Returns the image's (width, height), or None if pdftoppm is missing (nothing is written then).
    Raises `ProbeError` when the page cannot be rendered (password-protected PDFs included), and
    the limit errors of `probe_av`.
    """
    if tools.pdftoppm is None:
        return None
    source = _input_file(path)
    target = Path(out_path)
    image_format = _image_format(target)
    _check_max_px(max_px)
    with _scratch(tools) as workdir:
        root = workdir / "preview"
        argv = [
            tools.pdftoppm,
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            "-png" if image_format == "PNG" else "-jpeg",
            "-scale-to",
            str(max_px),
            str(source),
            str(root),
        ]
        result = _run("pdftoppm", argv, tools, workdir)
        if result.returncode != 0:
            raise ProbeError(_failure("pdftoppm", result, source))
        page = root.with_suffix(".png" if image_format == "PNG" else ".jpg")
        if not page.is_file():
            raise ProbeError("pdftoppm rendered nothing")
        size = _check_image(page, image_format, "pdftoppm")
        _publish(page, target)
    return size


def _image_format(target: Path) -> str:
    image_format = _IMAGE_SUFFIXES.get(target.suffix.lower())
    if image_format is None:
        raise ValueError(f"out_path must end in one of {', '.join(_IMAGE_SUFFIXES)}")
    return image_format


def _check_max_px(max_px: int) -> None:
    if not 16 <= max_px <= 8192:
        raise ValueError("max_px must be between 16 and 8192")


def _check_image(produced: Path, image_format: str, tool: str) -> tuple[int, int]:
    """The size of an image a tool produced, after making sure it is one."""
    try:
        with Image.open(produced, formats=[image_format]) as image:
            image.load()
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ProbeError(f"{tool} produced an unreadable image") from exc


def _poster_argv(
    tools: ProbeTools, source: Path, frame: Path, at: float, max_px: int, image_format: str
) -> list[str]:
    assert tools.ffmpeg is not None
    scale = f"scale=w='min({max_px},iw)':h='min({max_px},ih)':force_original_aspect_ratio=decrease"
    codec = ["-c:v", "png"] if image_format == "PNG" else ["-c:v", "mjpeg", "-q:v", "3"]
    return [
        tools.ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-v",
        "error",
        *_ffmpeg_input_restrictions(),
        "-ss",
        f"{at:.3f}",
        "-i",
        _file_url(source),
        "-an",
        "-sn",
        "-dn",
        "-frames:v",
        "1",
        "-vf",
        scale,
        *codec,
        "-fs",
        str(tools.max_output_bytes),
        "-f",
        "image2",
        "-update",
        "1",
        "-y",
        str(frame),
    ]
