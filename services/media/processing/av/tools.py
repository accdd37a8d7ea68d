"""Facts about video, audio and PDF files, extracted by external tools run at arm's length.

ffprobe and ffmpeg read video and audio, pdfinfo and pdftoppm read PDFs. Every file handed to them
is untrusted, so each call:

* runs the tool from an argv list (never a shell) with stdin from /dev/null, a minimal environment
  and an empty temporary directory as its working directory (removed afterwards);
* names the input by an absolute path (a ``file:`` URL for FFmpeg), so a name starting with ``-``
  is never an option and one containing ``:`` is never a protocol;
* lets FFmpeg open nothing but that one file: ``-protocol_whitelist file`` keeps it off the
  network, and ``-format_whitelist`` keeps it to demuxers that never open other files. The
  protocol whitelist alone is not enough: an HLS playlist or an ffconcat script uploaded as
  ``x.mp4`` would otherwise make FFmpeg read other local files (other users' uploads, say);
* is killed, with every process it started, once it runs longer than the time limit, and once it
  writes more than the output cap (stdout, stderr and produced files together);
* reports failure as a typed error (a `ProbeError`, which is an `UnsupportedMediaType`), never as
  a raw `subprocess` exception.

The tools are optional. When one is missing the function needing it returns None, and
`ProbeTools.missing_reason` says why, so the caller can keep the record usable without facts.

Under eventlet's monkey patching (``nameko run``), `subprocess` is the green one: waiting for a
tool only suspends the calling green thread, so no thread pool is needed around these calls.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from services.media.core.vocabulary import MediaType
from services.media.exceptions import MediaError, UnsupportedMediaType
from services.media.ingest.sniffing import media_type_of

__all__ = [
    "AV_DEMUXERS",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_MAX_PX",
    "DEFAULT_TIMEOUT_SECONDS",
    "TOOL_NAMES",
    "AvFacts",
    "PdfFacts",
    "ProbeError",
    "ProbeTools",
    "ToolOutputTooLarge",
    "ToolTimeout",
    "ToolUnavailable",
    "pdf_preview",
    "poster_frame",
    "poster_time",
    "probe_av",
    "probe_pdf",
    "tools_for",
]

TOOL_NAMES = ("ffprobe", "ffmpeg", "pdfinfo", "pdftoppm")
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PX = 1280
"""The longest side, in pixels, of a poster frame or a PDF preview."""

AV_DEMUXERS = (
    # Containers.
    "mov",  # also mp4, m4a, 3gp, 3g2, mj2; its external data references are off by default
    "matroska",  # also webm
    "avi",
    "flv",
    "asf",
    "mpegts",
    "mpeg",
    "mxf",
    "nut",
    "ogg",
    "ivf",
    "dv",
    # Audio.
    "mp3",
    "wav",
    "w64",
    "flac",
    "aac",
    "aiff",
    "caf",
    "au",
    "ac3",
    "eac3",
    "dts",
    "truehd",
    "amr",
    "wv",
    "ape",
    "tta",
    # Raw video elementary streams.
    "h264",
    "hevc",
    "m4v",
    "mpegvideo",
)
"""FFmpeg demuxers allowed to read an upload. None of them opens another file or URL; never add
playlist or reference formats (hls, dash, concat, imf, image2, sdp, ...)."""

# How often a running tool's clock and output size are checked.
_POLL_SECONDS = 0.05
# A video shorter than this gets its poster from its first frame.
_SHORT_VIDEO_SECONDS = 2.0
_POSTER_FRACTION = 0.1
_ENVIRONMENT_PATH = "/usr/local/bin:/usr/bin:/bin"
_STDOUT = ".stdout"
_STDERR = ".stderr"
_MAX_DETAIL_CHARS = 300
_MAX_TITLE_CHARS = 500
_IMAGE_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
_FFPROBE_ENTRIES = (
    "format=format_name,duration,bit_rate"
    ":stream=index,codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,"
    "sample_rate,channels,duration"
    ":stream_disposition=attached_pic"
    ":stream_tags=rotate"
    ":stream_side_data=rotation"
)


class ProbeError(UnsupportedMediaType):
    """A tool could not read the file: it is damaged, hostile, or not what it claims to be."""


class ToolTimeout(ProbeError):
    """A tool ran longer than the time limit and was killed."""

    def __init__(self, tool: str, seconds: float) -> None:
        super().__init__(f"{tool} took longer than {seconds:g} s")
        self.tool = tool
        self.seconds = seconds
        self.args = (tool, seconds)


class ToolOutputTooLarge(ProbeError):
    """A tool wrote more than the output cap and was killed."""

    def __init__(self, tool: str, limit: int) -> None:
        super().__init__(f"{tool} wrote more than {limit} bytes")
        self.tool = tool
        self.limit = limit
        self.args = (tool, limit)


class ToolUnavailable(MediaError):
    """A configured tool could not be started at all: a deployment fault, not the file's."""


@dataclass(frozen=True)
class ProbeTools:
    """Where the external tools are, and the limits every call to them runs under.

    A path defaults to the tool found on PATH when the instance is made, None when there is none;
    pass None explicitly to do without a tool.
    """

    ffprobe: str | None = field(default_factory=lambda: shutil.which("ffprobe"))
    ffmpeg: str | None = field(default_factory=lambda: shutil.which("ffmpeg"))
    pdfinfo: str | None = field(default_factory=lambda: shutil.which("pdfinfo"))
    pdftoppm: str | None = field(default_factory=lambda: shutil.which("pdftoppm"))
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    """Wall-clock limit of each external call."""
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    """Limit of what each call may write: stdout, stderr and produced files together."""
    scratch_dir: str | None = None
    """Where each call's temporary working directory is made; the system default if None."""

    def __post_init__(self) -> None:
        if not self.timeout_seconds > 0 or not math.isfinite(self.timeout_seconds):
            raise ValueError("timeout_seconds must be a positive number")
        if self.max_output_bytes < 1:
            raise ValueError("max_output_bytes must be positive")
        # The tools run in a temporary directory: a relative path would not be found there.
        for name in TOOL_NAMES:
            path = getattr(self, name)
            if path is not None:
                object.__setattr__(self, name, os.path.abspath(os.fspath(path)))

    @property
    def available(self) -> frozenset[str]:
        """The names of the tools that are configured."""
        return frozenset(name for name in TOOL_NAMES if getattr(self, name) is not None)

    def missing(self, *names: str) -> tuple[str, ...]:
        """Which of ``names`` (see `TOOL_NAMES`) are not configured."""
        for name in names:
            if name not in TOOL_NAMES:
                raise ValueError(f"unknown tool {name!r}")
        return tuple(name for name in names if getattr(self, name) is None)

    def missing_reason(self, *names: str) -> str | None:
        """Why facts needing ``names`` cannot be extracted (e.g. "ffprobe is not installed"),
        or None when every one of them is there."""
        missing = self.missing(*names)
        if not missing:
            return None
        if len(missing) == 1:
            return f"{missing[0]} is not installed"
        return f"{', '.join(missing[:-1])} and {missing[-1]} are not installed"


def tools_for(mime_type: str) -> tuple[str, ...]:
    """The tools that extract facts (and a preview) from content of ``mime_type``; () if none do.

    Pair it with `ProbeTools.missing_reason` to learn why a file got no extracted facts.
    """
    media_type = media_type_of(mime_type)
    if media_type is MediaType.VIDEO:
        return ("ffprobe", "ffmpeg")
    if media_type is MediaType.AUDIO:
        return ("ffprobe",)
    if mime_type.partition(";")[0].strip().lower() == "application/pdf":
        return ("pdfinfo", "pdftoppm")
    return ()


@dataclass(frozen=True)
class AvFacts:
    """What ffprobe tells about a video or audio file."""

    duration: float | None
    """Seconds."""
    format_name: str | None
    """FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"."""
    bit_rate: int | None
    """Bits per second, over the whole file."""
    has_video: bool
    """Whether there is a moving picture; cover art attached to audio does not count."""
    has_audio: bool
    video_codec: str | None = None
    width: int | None = None
    """As displayed: `rotation` already applied."""
    height: int | None = None
    rotation: int = 0
    """The rotation a player applies, in degrees 0..359, as ffprobe reports it."""
    frame_rate: float | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class PdfFacts:
    """What pdfinfo tells about a PDF."""

    pages: int | None
    """None when the PDF cannot be opened without a password."""
    width_pt: float | None
    """Of page 1, as displayed (its rotation applied), in points (1/72 inch)."""
    height_pt: float | None
    rotation: int
    """Page 1's rotation in degrees."""
    encrypted: bool
    needs_password: bool
    """Whether opening it needs a password (so nothing else is known and no preview is possible)."""
    title: str | None = None
    pdf_version: str | None = None


def poster_time(duration: float | None) -> float:
    """Where to take a video's poster frame from, in seconds: ~10% in, the start of short ones."""
    if duration is None or not math.isfinite(duration) or duration < _SHORT_VIDEO_SECONDS:
        return 0.0
    return round(duration * _POSTER_FRACTION, 3)


def probe_av(path: str | os.PathLike[str], tools: ProbeTools) -> AvFacts | None:
    """The facts of a video or audio file; None if ffprobe is missing.

    Raises `ProbeError` when ffprobe cannot read the file, `ToolTimeout` or `ToolOutputTooLarge`
    when it exceeds the limits, and `ToolUnavailable` when it cannot be started.
    """
    if tools.ffprobe is None:
        return None
    source = _input_file(path)
    argv = [
        tools.ffprobe,
        "-hide_banner",
        "-v",
        "error",
        *_ffmpeg_input_restrictions(),
        "-print_format",
        "json",
        "-show_entries",
        _FFPROBE_ENTRIES,
        _file_url(source),
    ]
    with _scratch(tools) as workdir:
        result = _run("ffprobe", argv, tools, workdir)
    if result.returncode != 0:
        raise ProbeError(_failure("ffprobe", result, source))
    try:
        report = json.loads(result.stdout)
    except ValueError as exc:
        raise ProbeError("ffprobe wrote output that is not JSON") from exc
    if not isinstance(report, dict):
        raise ProbeError("ffprobe wrote output that is not a JSON object")
    return _av_facts(report)


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


def probe_pdf(path: str | os.PathLike[str], tools: ProbeTools) -> PdfFacts | None:
    """The facts of a PDF; None if pdfinfo is missing.

    A password-protected PDF is not an error: its facts say ``needs_password`` and little else.
    Raises `ProbeError` when pdfinfo cannot read the file, and the limit errors of `probe_av`.
    """
    if tools.pdfinfo is None:
        return None
    source = _input_file(path)
    argv = [tools.pdfinfo, "-enc", "UTF-8", str(source)]
    with _scratch(tools) as workdir:
        result = _run("pdfinfo", argv, tools, workdir)
    if result.returncode != 0:
        if b"Incorrect password" in result.stderr:
            return PdfFacts(
                pages=None,
                width_pt=None,
                height_pt=None,
                rotation=0,
                encrypted=True,
                needs_password=True,
            )
        raise ProbeError(_failure("pdfinfo", result, source))
    return _pdf_facts(result.stdout.decode("utf-8", "replace"))


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


# --- Running a tool ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: bytes
    stderr: bytes


@contextlib.contextmanager
def _scratch(tools: ProbeTools) -> Iterator[Path]:
    """An empty directory for one call: the tool's cwd, HOME and TMPDIR, and where it writes."""
    workdir = tempfile.mkdtemp(prefix="media-probe-", dir=tools.scratch_dir)
    try:
        yield Path(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(tool: str, argv: Sequence[str], tools: ProbeTools, workdir: Path) -> _Result:
    """Run ``argv`` in ``workdir`` under the limits of ``tools``; its output is read back capped.

    `subprocess.run` cannot do this: on a timeout it kills the tool but not the processes the tool
    started, and it buffers output without bound. So the tool gets its own session (a process
    group to kill as a whole), writes into files in ``workdir``, and is watched until it exits.
    """
    limit = tools.max_output_bytes
    stdout_path = workdir / _STDOUT
    stderr_path = workdir / _STDERR
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=workdir,
                env=_environment(workdir),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise ToolUnavailable(f"{tool} could not be started: {exc.strerror or exc}") from exc
    try:
        _limit_resources(process.pid, limit)
        deadline = time.monotonic() + tools.timeout_seconds
        while True:
            try:
                returncode = process.wait(timeout=_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if _tree_size(workdir) > limit:
                raise ToolOutputTooLarge(tool, limit)
            if time.monotonic() >= deadline:
                raise ToolTimeout(tool, tools.timeout_seconds)
    finally:
        # On a limit, or when the calling (green) thread is itself killed.
        _kill(process)
    if _tree_size(workdir) > limit:
        raise ToolOutputTooLarge(tool, limit)
    return _Result(returncode, _read_capped(stdout_path, limit), _read_capped(stderr_path, limit))


def _environment(workdir: Path) -> dict[str, str]:
    return {
        "PATH": _ENVIRONMENT_PATH,
        "LC_ALL": "C",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
    }


def _limit_resources(pid: int, limit: int) -> None:
    """A hard file size limit, a backstop for what the polling catches late; and no core dumps.

    Set from outside (there is a short window before it applies) rather than with ``preexec_fn``,
    which is unsafe in a threaded process.
    """
    prlimit = getattr(resource, "prlimit", None)
    if prlimit is None:
        return
    # One byte over the cap, so that a tool stopped by it is seen to have gone over.
    for kind, value in ((resource.RLIMIT_FSIZE, limit + 1), (resource.RLIMIT_CORE, 0)):
        with contextlib.suppress(OSError, ValueError):
            prlimit(pid, kind, (value, value))


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a tool's whole process group (unless it has exited and been reaped) and reap it."""
    if process.returncode is None:
        # Not reaped yet, so its pid (the group's id) cannot have been reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tree_size(workdir: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(workdir):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _read_capped(path: Path, limit: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(limit)


def _input_file(path: str | os.PathLike[str]) -> Path:
    """The absolute path of a regular file: never mistaken for an option, never a FIFO to hang on.

    Raises FileNotFoundError if there is none, `ProbeError` if it is empty.
    """
    source = Path(os.path.abspath(os.fspath(path)))
    info = source.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"not a regular file: {source}")
    if info.st_size == 0:
        raise ProbeError("the file is empty")
    return source


def _failure(tool: str, result: _Result, source: Path) -> str:
    """A one-line account of a tool's failure, without the server's paths in it."""
    text = result.stderr.decode("utf-8", "replace")
    text = text.replace(_file_url(source), "input").replace(str(source), "input")
    lines = [re.sub(r"\s+", " ", line).strip() for line in text.splitlines()]
    detail = "; ".join(line for line in lines if line)[-_MAX_DETAIL_CHARS:]
    if result.returncode < 0:
        return f"{tool} was killed by signal {-result.returncode}" + (
            f": {detail}" if detail else ""
        )
    if detail:
        return f"{tool} could not read the file: {detail}"
    return f"{tool} could not read the file (exit status {result.returncode})"


def _publish(produced: Path, target: Path) -> None:
    """Move a produced file to where the caller wants it, never leaving a partial one there."""
    try:
        os.replace(produced, target)
        return
    except OSError:
        pass  # e.g. another filesystem: copy next to the target, then rename.
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        shutil.copyfile(produced, partial)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


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


# --- FFmpeg -----------------------------------------------------------------------------------


def _ffmpeg_input_restrictions() -> list[str]:
    """Input options keeping FFmpeg to the one local file it is given."""
    return ["-protocol_whitelist", "file", "-format_whitelist", ",".join(AV_DEMUXERS)]


def _file_url(source: Path) -> str:
    # FFmpeg's file protocol takes the rest of the URL verbatim: no percent-decoding.
    return f"file:{source}"


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


def _av_facts(report: Mapping[str, Any]) -> AvFacts:
    raw_streams = report.get("streams")
    streams = (
        [s for s in raw_streams if isinstance(s, dict)] if isinstance(raw_streams, list) else []
    )
    container: dict[str, Any] = report["format"] if isinstance(report.get("format"), dict) else {}
    video = next((s for s in streams if _is_moving_picture(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        raise ProbeError("the file has no audio or video stream")

    duration = _positive_float(container.get("duration"))
    if duration is None:
        stream_durations = [_positive_float(s.get("duration")) for s in streams]
        duration = max((d for d in stream_durations if d is not None), default=None)

    facts: dict[str, Any] = {
        "duration": duration,
        "format_name": _text(container.get("format_name")),
        "bit_rate": _positive_int(container.get("bit_rate")),
        "has_video": video is not None,
        "has_audio": audio is not None,
    }
    if video is not None:
        width = _positive_int(video.get("width"))
        height = _positive_int(video.get("height"))
        rotation = _rotation(video)
        if rotation in (90, 270):
            width, height = height, width
        facts.update(
            video_codec=_text(video.get("codec_name")),
            width=width,
            height=height,
            rotation=rotation,
            frame_rate=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        )
    if audio is not None:
        facts.update(
            audio_codec=_text(audio.get("codec_name")),
            sample_rate=_positive_int(audio.get("sample_rate")),
            channels=_positive_int(audio.get("channels")),
        )
    return AvFacts(**facts)


def _is_moving_picture(stream: Mapping[str, Any]) -> bool:
    if stream.get("codec_type") != "video":
        return False
    disposition = stream.get("disposition")
    return not (isinstance(disposition, dict) and disposition.get("attached_pic") == 1)


def _rotation(stream: Mapping[str, Any]) -> int:
    """The stream's display matrix rotation, or its legacy ``rotate`` tag, in 0..359."""
    value: Any = None
    side_data = stream.get("side_data_list")
    if isinstance(side_data, list):
        value = next(
            (
                item["rotation"]
                for item in side_data
                if isinstance(item, dict) and "rotation" in item
            ),
            None,
        )
    if value is None and isinstance(stream.get("tags"), dict):
        value = stream["tags"].get("rotate")
    degrees = _float(value)
    if degrees is None:
        return 0
    return round(degrees) % 360


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _positive_float(value: Any) -> float | None:
    number = _float(value)
    return number if number is not None and number > 0 else None


def _positive_int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None and number >= 1 else None


def _rate(value: Any) -> float | None:
    """A rate like "30000/1001"; None for FFmpeg's "0/0" (unknown)."""
    if not isinstance(value, str):
        return None
    numerator, _, denominator = value.partition("/")
    top, bottom = _float(numerator), _float(denominator or "1")
    if top is None or not bottom or top <= 0:
        return None
    return round(top / bottom, 3)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- Poppler ----------------------------------------------------------------------------------

_PAGE_SIZE = re.compile(r"([0-9.]+) x ([0-9.]+) pts")
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")


def _pdf_facts(report: str) -> PdfFacts:
    # Document strings (Title, Author, ...) come first and may hold line breaks, so a hostile one
    # can forge "Pages:" lines; the real ones follow it, so the last value of each key wins.
    fields: dict[str, str] = {}
    title: str | None = None
    for line in report.split("\n"):
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key = key.strip()
        if key == "Title" and title is None:
            title = value.strip()
        fields[key] = value.strip()

    pages = _positive_int(fields.get("Pages"))
    if pages is None:
        raise ProbeError("pdfinfo found no pages")
    width = height = None
    size = _PAGE_SIZE.match(fields.get("Page size", ""))
    if size:
        width, height = _positive_float(size.group(1)), _positive_float(size.group(2))
    degrees = _float(fields.get("Page rot"))
    rotation = round(degrees) % 360 if degrees is not None else 0
    if rotation in (90, 270):
        width, height = height, width
    if title is not None:
        title = _CONTROL_CHARS.sub("", title).strip()[:_MAX_TITLE_CHARS] or None
    return PdfFacts(
        pages=pages,
        width_pt=width,
        height_pt=height,
        rotation=rotation,
        encrypted=fields.get("Encrypted", "no").startswith("yes"),
        needs_password=False,
        title=title,
        pdf_version=fields.get("PDF version") or None,
    )
