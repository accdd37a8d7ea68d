"""Facts about video and audio files, as ffprobe reports them.

ffprobe runs through `tools._run` with FFmpeg's input restrictions, so it opens the one file it is
given and nothing else; its JSON report is read defensively, as hostile input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.media.processing.av.tools import (
    ProbeError,
    ProbeTools,
    _failure,
    _ffmpeg_input_restrictions,
    _file_url,
    _float,
    _input_file,
    _positive_float,
    _positive_int,
    _run,
    _scratch,
)

__all__ = ["AvFacts", "probe_av"]

_FFPROBE_ENTRIES = (
    "format=format_name,duration,bit_rate"
    ":stream=index,codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,"
    "sample_rate,channels,duration"
    ":stream_disposition=attached_pic"
    ":stream_tags=rotate"
    ":stream_side_data=rotation"
)


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
