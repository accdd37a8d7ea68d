"""Running the external tools at arm's length: where they are, their limits, and their errors.

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

Every module of this package that calls a tool goes through `_scratch` and `_run`, names its input
with `_input_file` (and, for FFmpeg, `_file_url` behind `_ffmpeg_input_restrictions`), and hands
what a tool produced to the caller with `_publish`.

The tools are optional. When one is missing the function needing it returns None, and
`ProbeTools.missing_reason` says why, so the caller can keep the record usable without facts.

Under eventlet's monkey patching (``nameko run``), `subprocess` is the green one: waiting for a
tool only suspends the calling green thread, so no thread pool is needed around these calls.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.media.core.vocabulary import MediaType
from services.media.exceptions import MediaError, UnsupportedMediaType
from services.media.ingest.sniffing import media_type_of

__all__ = [
    "AV_DEMUXERS",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_TIMEOUT_SECONDS",
    "TOOL_NAMES",
    "ProbeError",
    "ProbeTools",
    "ToolOutputTooLarge",
    "ToolTimeout",
    "ToolUnavailable",
    "tools_for",
]

TOOL_NAMES = ("ffprobe", "ffmpeg", "pdfinfo", "pdftoppm")
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024

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
_ENVIRONMENT_PATH = "/usr/local/bin:/usr/bin:/bin"
_STDOUT = ".stdout"
_STDERR = ".stderr"
_MAX_DETAIL_CHARS = 300


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


# --- FFmpeg -----------------------------------------------------------------------------------


def _ffmpeg_input_restrictions() -> list[str]:
    """Input options keeping FFmpeg to the one local file it is given."""
    return ["-protocol_whitelist", "file", "-format_whitelist", ",".join(AV_DEMUXERS)]


def _file_url(source: Path) -> str:
    # FFmpeg's file protocol takes the rest of the URL verbatim: no percent-decoding.
    return f"file:{source}"


# --- Numbers in a tool's report -------------------------------------------------------------------


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
