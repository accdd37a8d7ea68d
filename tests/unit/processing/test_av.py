"""Extracting facts with the real tools, from real files made here; hostile files included.

Video and audio samples are generated with ffmpeg's lavfi sources, PDFs are written byte by byte
(or by Pillow). The tools are Debian's ffmpeg and poppler-utils, which scripts/bootstrap installs:
a test needing one fails where it is missing. What happens without them is tested by configuring
no tools.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import eventlet
import eventlet.patcher
import pytest
from PIL import Image

from services.media.exceptions import MediaError, UnsupportedMediaType
from services.media.processing.av import (
    TOOL_NAMES,
    AvFacts,
    PdfFacts,
    ProbeError,
    ProbeTools,
    ToolOutputTooLarge,
    ToolTimeout,
    ToolUnavailable,
    pdf_preview,
    poster_frame,
    poster_time,
    probe_av,
    probe_pdf,
    tools_for,
)
from tests.conftest import require_tools

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.usefixtures("ffmpeg_installed")
needs_poppler = pytest.mark.usefixtures("poppler_installed")
NO_TOOLS = ProbeTools(ffprobe=None, ffmpeg=None, pdfinfo=None, pdftoppm=None)


@pytest.fixture
def ffmpeg_installed() -> None:
    require_tools("ffmpeg", "ffprobe")


@pytest.fixture
def poppler_installed() -> None:
    require_tools("pdfinfo", "pdftoppm")


@pytest.fixture
def tools() -> ProbeTools:
    return ProbeTools(timeout_seconds=20)


# --- Samples ----------------------------------------------------------------------------------


@functools.cache
def encoders() -> frozenset[str]:
    assert FFMPEG is not None
    listing = subprocess.run(
        [FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True, check=True
    ).stdout
    return frozenset(re.findall(r"^ [A-Z.]{6} (\S+)", listing, re.MULTILINE))


def first_encoder(*names: str) -> str | None:
    return next((name for name in names if name in encoders()), None)


def ffmpeg(out: Path, *args: str) -> Path:
    assert FFMPEG is not None
    subprocess.run(
        [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", *args, "-y", str(out)], check=True
    )
    return out


def lavfi_video(size: str = "320x240", rate: int = 25) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]


def lavfi_tone() -> list[str]:
    return ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]


def video_codec_args() -> tuple[list[str], str]:
    """Encoder arguments for an MP4 video stream, and the codec ffprobe then reports."""
    if "libx264" in encoders():
        return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], "h264"
    return ["-c:v", "mpeg4"], "mpeg4"


class Samples:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        video, self.video_codec = video_codec_args()
        self.clip = ffmpeg(
            folder / "clip.mp4", *lavfi_video(), *lavfi_tone(), "-t", "2", *video, "-c:a", "aac"
        )
        self.rotated = ffmpeg(
            folder / "rotated.mp4", "-i", str(self.clip), "-c", "copy", "-metadata:s:v", "rotate=90"
        )
        self.wide = ffmpeg(
            folder / "wide.mkv", *lavfi_video("2000x500", 5), "-t", "0.4", "-c:v", "mpeg4"
        )
        self.segment = ffmpeg(folder / "segment.ts", "-i", str(self.clip), "-c", "copy")
        self.wav = ffmpeg(folder / "tone.wav", *lavfi_tone(), "-t", "1")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    require_tools("ffmpeg", "ffprobe")
    return Samples(tmp_path_factory.mktemp("samples"))


def pdf_string(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.replace("\n", "\\n").encode("latin-1") + b")"


def pdf_document(
    *pages: tuple[float, float],
    rotate_first: int = 0,
    title: str | None = None,
    encrypt: tuple[bytes, bytes] | None = None,
) -> bytes:
    """A PDF written by hand: blank pages of the given sizes in points, a correct xref table.

    ``encrypt`` is (user password, owner password): standard security handler, revision 2.
    """
    count = len(pages)
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(count))
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[" + kids + b"]/Count %d>>" % count,
    ]
    for i, (width, height) in enumerate(pages):
        rotate = b"/Rotate %d" % rotate_first if i == 0 and rotate_first else b""
        box = f"[0 0 {width:g} {height:g}]".encode()
        objects.append(b"<</Type/Page/Parent 2 0 R/MediaBox" + box + rotate + b">>")
    trailer = b"/Root 1 0 R"
    if title is not None:
        objects.append(b"<</Title" + pdf_string(title) + b">>")
        trailer += b"/Info %d 0 R" % len(objects)
    if encrypt is not None:
        file_id = hashlib.md5(b"probe").digest()
        objects.append(_standard_security(*encrypt, file_id))
        trailer += b"/Encrypt %d 0 R/ID[<%s><%s>]" % (
            len(objects),
            file_id.hex().encode(),
            file_id.hex().encode(),
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<</Size %d" % (len(objects) + 1) + trailer + b">>\n"
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    box = list(range(256))
    j = 0
    for i in range(256):
        j = (j + box[i] + key[i % len(key)]) % 256
        box[i], box[j] = box[j], box[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + box[i]) % 256
        box[i], box[j] = box[j], box[i]
        out.append(byte ^ box[(box[i] + box[j]) % 256])
    return bytes(out)


def _standard_security(user: bytes, owner: bytes, file_id: bytes) -> bytes:
    """The /Encrypt dictionary of PDF 1.7 section 7.6.3, revision 2 (40-bit RC4)."""
    permissions = -4

    def padded(password: bytes) -> bytes:
        return (password + _PASSWORD_PAD)[:32]

    o_value = _rc4(hashlib.md5(padded(owner)).digest()[:5], padded(user))
    key = hashlib.md5(padded(user) + o_value + struct.pack("<i", permissions) + file_id).digest()[
        :5
    ]
    u_value = _rc4(key, _PASSWORD_PAD)
    return b"<</Filter/Standard/V 1/R 2/O<%s>/U<%s>/P %d>>" % (
        o_value.hex().encode(),
        u_value.hex().encode(),
        permissions,
    )


def image_pdf(path: Path, width: int = 300, height: int = 200) -> Path:
    """A one-page PDF from Pillow: a width x height pt page (72 dpi)."""
    Image.new("RGB", (width, height), (20, 90, 200)).save(path, resolution=72.0)
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def image_of(path: Path) -> tuple[str | None, tuple[int, int]]:
    with Image.open(path) as image:
        image.load()
        return image.format, image.size


def fake_tool(folder: Path, name: str, body: str) -> str:
    script = folder / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped by someone else."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rpartition(")")[2].split()[0] not in ("Z", "X")


# --- Video and audio --------------------------------------------------------------------------


def test_probes_an_mp4_with_video_and_audio(samples: Samples, tools: ProbeTools) -> None:
    facts = probe_av(samples.clip, tools)

    assert isinstance(facts, AvFacts)
    assert facts.duration == pytest.approx(2.0, abs=0.1)
    assert facts.format_name is not None and "mp4" in facts.format_name.split(",")
    assert facts.bit_rate is not None and facts.bit_rate > 0
    assert (facts.has_video, facts.has_audio) == (True, True)
    assert (facts.video_codec, facts.audio_codec) == (samples.video_codec, "aac")
    assert (facts.width, facts.height, facts.rotation) == (320, 240, 0)
    assert facts.frame_rate == 25.0
    assert (facts.sample_rate, facts.channels) == (44100, 1)


def test_rotation_is_applied_to_the_dimensions(samples: Samples, tools: ProbeTools) -> None:
    facts = probe_av(samples.rotated, tools)

    assert facts is not None
    assert facts.rotation in (90, 270)
    assert (facts.width, facts.height) == (240, 320)


def test_probes_a_webm(samples: Samples, tools: ProbeTools) -> None:
    # Debian's ffmpeg has both VP8/VP9 and Opus/Vorbis encoders.
    video = first_encoder("libvpx", "libvpx-vp9")
    audio = first_encoder("libopus", "libvorbis")
    assert video is not None and audio is not None, "this ffmpeg has no WebM encoders"
    path = ffmpeg(
        samples.folder / "clip.webm",
        *lavfi_video("160x120", 10),
        *lavfi_tone(),
        "-t",
        "1",
        "-c:v",
        video,
        "-deadline",
        "realtime",
        "-c:a",
        audio,
        "-ar",
        "48000",
    )

    facts = probe_av(path, tools)

    assert facts is not None
    assert facts.format_name == "matroska,webm"
    assert facts.video_codec in ("vp8", "vp9")
    assert facts.audio_codec in ("opus", "vorbis")
    assert (facts.width, facts.height, facts.frame_rate) == (160, 120, 10.0)
    assert facts.duration == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("suffix", "encoder", "codec"),
    [
        ("wav", "pcm_s16le", "pcm_s16le"),
        ("mp3", "libmp3lame", "mp3"),
        ("ogg", "libvorbis", "vorbis"),
    ],
)
def test_probes_audio_only_files(
    samples: Samples, tools: ProbeTools, suffix: str, encoder: str, codec: str
) -> None:
    assert encoder in encoders(), f"this ffmpeg has no {encoder} encoder (Debian's has)"
    path = ffmpeg(samples.folder / f"tone.{suffix}", *lavfi_tone(), "-t", "1", "-c:a", encoder)

    facts = probe_av(path, tools)

    assert facts is not None
    assert (facts.has_audio, facts.has_video) == (True, False)
    assert facts.audio_codec == codec
    assert (facts.video_codec, facts.width, facts.height, facts.frame_rate) == (None,) * 4
    assert facts.duration == pytest.approx(1.0, abs=0.1)


def test_cover_art_does_not_make_audio_a_video(samples: Samples, tools: ProbeTools) -> None:
    assert "libmp3lame" in encoders(), "this ffmpeg has no MP3 encoder (Debian's has)"
    cover = samples.folder / "cover.png"
    Image.new("RGB", (64, 64), "orange").save(cover)
    path = ffmpeg(
        samples.folder / "with-cover.mp3",
        *lavfi_tone(),
        "-i",
        str(cover),
        "-map",
        "0:a",
        "-map",
        "1:v",
        "-t",
        "1",
        "-c:a",
        "libmp3lame",
        "-c:v",
        "png",
        "-disposition:v",
        "attached_pic",
        "-id3v2_version",
        "3",
    )

    facts = probe_av(path, tools)

    assert facts is not None
    assert (facts.has_audio, facts.has_video, facts.video_codec) == (True, False, None)


def test_poster_frame_of_a_video(samples: Samples, tools: ProbeTools, tmp_path: Path) -> None:
    out = tmp_path / "poster.jpg"

    assert poster_frame(samples.clip, out, tools) == (320, 240)
    assert image_of(out) == ("JPEG", (320, 240))
    assert list(tmp_path.iterdir()) == [out]


def test_poster_frame_is_rotated_like_the_video(
    samples: Samples, tools: ProbeTools, tmp_path: Path
) -> None:
    out = tmp_path / "poster.png"

    assert poster_frame(samples.rotated, out, tools, at_seconds=0.5) == (240, 320)
    assert image_of(out) == ("PNG", (240, 320))


def test_poster_frame_is_scaled_down_to_max_px(
    samples: Samples, tools: ProbeTools, tmp_path: Path
) -> None:
    out = tmp_path / "poster.jpg"

    assert poster_frame(samples.wide, out, tools) == (1280, 320)
    assert poster_frame(samples.wide, out, tools, max_px=400) == (400, 100)
    assert image_of(out) == ("JPEG", (400, 100))


def test_poster_frame_past_the_end_falls_back_to_the_first_frame(
    samples: Samples, tools: ProbeTools, tmp_path: Path
) -> None:
    out = tmp_path / "poster.jpg"

    assert poster_frame(samples.clip, out, tools, at_seconds=3600) == (320, 240)
    assert image_of(out)[1] == (320, 240)


def test_poster_frame_of_audio_is_an_error(
    samples: Samples, tools: ProbeTools, tmp_path: Path
) -> None:
    out = tmp_path / "poster.jpg"

    with pytest.raises(ProbeError, match="ffmpeg"):
        poster_frame(samples.wav, out, tools)
    assert not out.exists()


def test_poster_time() -> None:
    assert poster_time(None) == 0.0
    assert poster_time(0.5) == 0.0
    assert poster_time(float("nan")) == 0.0
    assert poster_time(2.0) == 0.2
    assert poster_time(120.0) == 12.0


# --- PDFs -------------------------------------------------------------------------------------


@needs_poppler
def test_probes_a_two_page_pdf(tmp_path: Path, tools: ProbeTools) -> None:
    path = write(
        tmp_path / "doc.pdf", pdf_document((595, 842), (612, 792), title="Quarterly (draft)")
    )

    facts = probe_pdf(path, tools)

    assert facts == PdfFacts(
        pages=2,
        width_pt=595.0,
        height_pt=842.0,
        rotation=0,
        encrypted=False,
        needs_password=False,
        title="Quarterly (draft)",
        pdf_version="1.4",
    )


@needs_poppler
def test_a_rotated_first_page_swaps_the_page_size(tmp_path: Path, tools: ProbeTools) -> None:
    path = write(tmp_path / "doc.pdf", pdf_document((400, 100), rotate_first=90))

    facts = probe_pdf(path, tools)
    size = pdf_preview(path, tmp_path / "preview.png", tools, max_px=800)

    assert facts is not None
    assert (facts.width_pt, facts.height_pt, facts.rotation) == (100.0, 400.0, 90)
    assert size == (200, 800)


@needs_poppler
def test_forged_lines_in_the_title_do_not_change_the_facts(
    tmp_path: Path, tools: ProbeTools
) -> None:
    title = "Invoice\nPages: 999\nEncrypted: yes\nPage size: 1 x 1 pts"
    path = write(tmp_path / "doc.pdf", pdf_document((300, 300), (300, 300), title=title))

    facts = probe_pdf(path, tools)

    assert facts is not None
    assert (facts.pages, facts.encrypted) == (2, False)
    assert (facts.width_pt, facts.height_pt) == (300.0, 300.0)
    assert facts.title == "Invoice"


@needs_poppler
def test_an_encrypted_pdf_without_a_user_password(tmp_path: Path, tools: ProbeTools) -> None:
    path = write(tmp_path / "doc.pdf", pdf_document((200, 100), encrypt=(b"", b"owner-secret")))

    facts = probe_pdf(path, tools)

    assert facts is not None
    assert (facts.pages, facts.encrypted, facts.needs_password) == (1, True, False)
    assert pdf_preview(path, tmp_path / "preview.png", tools, max_px=400) == (400, 200)


@needs_poppler
def test_a_password_protected_pdf(tmp_path: Path, tools: ProbeTools) -> None:
    path = write(tmp_path / "doc.pdf", pdf_document((200, 100), encrypt=(b"user", b"owner")))
    out = tmp_path / "preview.png"

    facts = probe_pdf(path, tools)

    assert facts == PdfFacts(
        pages=None, width_pt=None, height_pt=None, rotation=0, encrypted=True, needs_password=True
    )
    with pytest.raises(ProbeError, match="pdftoppm"):
        pdf_preview(path, out, tools)
    assert not out.exists()


@needs_poppler
def test_pdf_preview_png_and_jpeg(tmp_path: Path, tools: ProbeTools) -> None:
    path = image_pdf(tmp_path / "image.pdf", 300, 200)

    facts = probe_pdf(path, tools)
    png = pdf_preview(path, tmp_path / "preview.png", tools, max_px=600)
    jpeg = pdf_preview(path, tmp_path / "preview.jpeg", tools)

    assert facts is not None
    assert (facts.pages, facts.width_pt, facts.height_pt) == (1, 300.0, 200.0)
    assert png == (600, 400)
    assert image_of(tmp_path / "preview.png") == ("PNG", (600, 400))
    # 1280 * 200 / 300 = 853.3; poppler rounds up.
    assert jpeg is not None and jpeg[0] == 1280 and jpeg[1] in (853, 854)
    assert image_of(tmp_path / "preview.jpeg") == ("JPEG", jpeg)


@needs_poppler
def test_pdf_preview_of_a_multi_page_pdf_renders_page_one(
    tmp_path: Path, tools: ProbeTools
) -> None:
    path = write(tmp_path / "doc.pdf", pdf_document((100, 200), (800, 100), (300, 300)))

    assert pdf_preview(path, tmp_path / "preview.png", tools, max_px=400) == (200, 400)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.pdf", "preview.png"]


# --- Hostile files ----------------------------------------------------------------------------


def test_a_truncated_mp4_is_a_typed_error(
    samples: Samples, tools: ProbeTools, tmp_path: Path
) -> None:
    data = samples.clip.read_bytes()
    path = write(tmp_path / "cut.mp4", data[: len(data) // 2])

    with pytest.raises(ProbeError, match="ffprobe could not read the file") as caught:
        probe_av(path, tools)
    assert isinstance(caught.value, UnsupportedMediaType)
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(ProbeError):
        poster_frame(path, tmp_path / "poster.jpg", tools, at_seconds=0)


def test_random_bytes_are_a_typed_error(
    samples: Samples, tools: ProbeTools, tmp_path: Path
) -> None:
    path = write(tmp_path / "noise.mp4", random.Random(7).randbytes(8192))

    with pytest.raises(ProbeError):
        probe_av(path, tools)


@needs_poppler
def test_a_broken_pdf_is_a_typed_error(tmp_path: Path, tools: ProbeTools) -> None:
    path = write(tmp_path / "noise.pdf", b"%PDF-1.4\n" + random.Random(7).randbytes(4096))

    with pytest.raises(ProbeError, match="pdfinfo"):
        probe_pdf(path, tools)
    with pytest.raises(ProbeError, match="pdftoppm"):
        pdf_preview(path, tmp_path / "preview.png", tools)


@needs_ffmpeg
@needs_poppler
def test_an_empty_file_is_a_typed_error(tmp_path: Path, tools: ProbeTools) -> None:
    path = write(tmp_path / "empty.mp4", b"")

    for call in (
        lambda: probe_av(path, tools),
        lambda: poster_frame(path, tmp_path / "poster.jpg", tools),
        lambda: probe_pdf(path, tools),
        lambda: pdf_preview(path, tmp_path / "preview.png", tools),
    ):
        with pytest.raises(ProbeError, match="empty"):
            call()


@needs_ffmpeg
@needs_poppler
def test_a_missing_file_or_a_directory_is_the_callers_mistake(
    tmp_path: Path, tools: ProbeTools
) -> None:
    with pytest.raises(FileNotFoundError):
        probe_av(tmp_path / "nothing.mp4", tools)
    with pytest.raises(ValueError, match="regular file"):
        probe_pdf(tmp_path, tools)


def test_an_hls_playlist_is_not_followed(
    samples: Samples, tools: ProbeTools, tmp_path: Path
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    playlist = write(
        tmp_path / "upload.mp4",
        (
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
            f"#EXTINF:2.0,\nhttp://127.0.0.1:{port}/x.ts\n"
            "#EXTINF:2.0,\nhttp://127.0.0.1:1/x\n"
            "#EXTINF:2.0,\n/etc/passwd\n"
            f"#EXTINF:2.0,\n{samples.segment}\n"
            "#EXT-X-ENDLIST\n"
        ).encode(),
    )
    try:
        with pytest.raises(ProbeError, match="whitelist"):
            probe_av(playlist, tools)
        with pytest.raises(ProbeError, match="whitelist"):
            poster_frame(playlist, tmp_path / "poster.jpg", tools, at_seconds=0)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_a_playlist_of_local_files_is_followed_by_a_bare_ffprobe(
    samples: Samples, tmp_path: Path
) -> None:
    """Why `-format_whitelist` is there: `-protocol_whitelist file` alone lets an HLS playlist
    pull in any local file, so probing one upload would report another's content."""
    playlist = write(
        tmp_path / "upload.mp4",
        f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{samples.segment}\n#EXT-X-ENDLIST\n".encode(),
    )
    assert FFPROBE is not None
    only_local = ["-protocol_whitelist", "file"]
    bare = subprocess.run(
        [FFPROBE, "-v", "error", *only_local, "-of", "json", "-show_format", f"file:{playlist}"],
        capture_output=True,
        check=True,
    )
    assert json.loads(bare.stdout)["format"]["format_name"] == "hls"

    with pytest.raises(ProbeError, match="whitelist"):
        probe_av(playlist, ProbeTools(timeout_seconds=20))


def test_an_ffconcat_script_is_not_followed(
    samples: Samples, tools: ProbeTools, tmp_path: Path
) -> None:
    shutil.copy(samples.clip, tmp_path / "other-users-video.mp4")
    script = write(
        tmp_path / "upload.mp4",
        f"ffconcat version 1.0\nfile other-users-video.mp4\nfile {samples.clip}\n".encode(),
    )

    with pytest.raises(ProbeError, match="whitelist"):
        probe_av(script, tools)


@pytest.mark.parametrize("name", ["-y.mp4", "-i", "concat:a.mp4|b.mp4", "http:x.mp4"])
def test_file_names_are_never_options_or_protocols(
    samples: Samples,
    tools: ProbeTools,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(samples.clip, tmp_path / name)

    facts = probe_av(name, tools)
    size = poster_frame(name, "poster.jpg", tools, at_seconds=0.5)

    assert facts is not None and (facts.width, facts.height) == (320, 240)
    assert size == (320, 240)
    assert (tmp_path / name).read_bytes() == samples.clip.read_bytes()


@needs_poppler
def test_pdf_names_are_never_options(
    tmp_path: Path, tools: ProbeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image_pdf(tmp_path / "-f.pdf")

    facts = probe_pdf("-f.pdf", tools)

    assert facts is not None and facts.pages == 1
    assert pdf_preview("-f.pdf", "-v.png", tools, max_px=300) == (300, 200)


# --- Running the tools ------------------------------------------------------------------------


def test_a_hanging_tool_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hanging = fake_tool(
        tmp_path,
        "ffprobe",
        f"echo $$ > {shlex.quote(str(pids))}\n"
        f"sleep 60 &\necho $! >> {shlex.quote(str(pids))}\nwait\n",
    )
    media = write(tmp_path / "clip.mp4", b"\x00" * 64)
    tools = ProbeTools(ffprobe=hanging, timeout_seconds=1)

    started = time.monotonic()
    with pytest.raises(ToolTimeout, match=r"^ffprobe took longer than 1 s$") as caught:
        probe_av(media, tools)

    assert time.monotonic() - started < 5
    assert isinstance(caught.value, UnsupportedMediaType)
    assert caught.value.args == ("ffprobe", 1)
    shell, child = (int(pid) for pid in pids.read_text().split())
    deadline = time.monotonic() + 2
    while (running(shell) or running(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(shell)
    assert not running(child)


@pytest.mark.skipif(
    not eventlet.patcher.is_monkey_patched("subprocess"),
    reason="only meaningful under eventlet's monkey patching (nameko test)",
)
def test_waiting_for_a_tool_lets_other_green_threads_run(tmp_path: Path) -> None:
    hanging = fake_tool(tmp_path, "pdfinfo", "exec sleep 60\n")
    document = image_pdf(tmp_path / "doc.pdf")
    ticks: list[float] = []

    def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            eventlet.sleep(0.05)

    ticker = eventlet.spawn(tick)
    try:
        with pytest.raises(ToolTimeout):
            probe_pdf(document, ProbeTools(pdfinfo=hanging, timeout_seconds=1))
    finally:
        ticker.kill()

    assert len(ticks) >= 10


def test_output_beyond_the_cap_kills_the_tool(tmp_path: Path) -> None:
    chatty = fake_tool(tmp_path, "ffprobe", "exec yes\n")
    media = write(tmp_path / "clip.mp4", b"\x00" * 64)
    tools = ProbeTools(ffprobe=chatty, timeout_seconds=10, max_output_bytes=64 * 1024)

    started = time.monotonic()
    with pytest.raises(ToolOutputTooLarge, match="wrote more than 65536 bytes"):
        probe_av(media, tools)
    assert time.monotonic() - started < 5


def test_a_tool_that_cannot_start_is_a_deployment_fault(tmp_path: Path) -> None:
    broken = tmp_path / "ffprobe"
    broken.write_text("not a program")
    media = write(tmp_path / "clip.mp4", b"\x00" * 64)

    with pytest.raises(ToolUnavailable, match="ffprobe could not be started") as caught:
        probe_av(media, ProbeTools(ffprobe=str(broken)))
    assert not isinstance(caught.value, UnsupportedMediaType)
    assert isinstance(caught.value, MediaError)


def test_a_tool_runs_confined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """argv, stdin, environment and working directory, as the tool sees them."""
    seen = tmp_path / "seen"
    seen.mkdir()
    spy = fake_tool(
        tmp_path,
        "ffprobe",
        f"pwd > {shlex.quote(str(seen / 'cwd'))}\n"
        f"cd {shlex.quote(str(seen))}\n"
        'printf "%s\\n" "$@" > argv\n'
        "readlink /proc/$$/fd/0 > stdin\n"
        "tr '\\000' '\\n' < /proc/$$/environ > environ\n"
        'echo \'{"streams": [{"codec_type": "audio", "codec_name": "flac"}],'
        ' "format": {"duration": "1.5"}}\'\n',
    )
    media = write(tmp_path / "-clip:1.mp4", b"\x00" * 64)
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    monkeypatch.chdir(tmp_path)

    facts = probe_av("-clip:1.mp4", ProbeTools(ffprobe=spy))

    assert facts == AvFacts(
        duration=1.5,
        format_name=None,
        bit_rate=None,
        has_video=False,
        has_audio=True,
        audio_codec="flac",
    )
    argv = (seen / "argv").read_text().splitlines()
    assert argv[-1] == f"file:{media}"
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    demuxers = argv[argv.index("-format_whitelist") + 1].split(",")
    assert "mov" in demuxers and "matroska" in demuxers
    assert not {"hls", "dash", "concat", "image2", "imf", "sdp", "rtsp"} & set(demuxers)
    assert (seen / "stdin").read_text().strip() == "/dev/null"
    environ = dict(line.split("=", 1) for line in (seen / "environ").read_text().splitlines())
    assert set(environ) == {"PATH", "LC_ALL", "HOME", "TMPDIR"}
    cwd = Path((seen / "cwd").read_text().strip())
    assert cwd != tmp_path and cwd.name.startswith("media-probe-")
    assert environ["HOME"] == environ["TMPDIR"] == str(cwd)
    assert not cwd.exists()


# --- Without the tools ------------------------------------------------------------------------


def test_missing_tools_give_none_and_a_reason(tmp_path: Path) -> None:
    media = write(tmp_path / "clip.mp4", b"\x00" * 64)
    document = write(tmp_path / "doc.pdf", b"%PDF-1.4\n")

    assert probe_av(media, NO_TOOLS) is None
    assert poster_frame(media, tmp_path / "poster.jpg", NO_TOOLS) is None
    assert probe_pdf(document, NO_TOOLS) is None
    assert pdf_preview(document, tmp_path / "preview.png", NO_TOOLS) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "doc.pdf"]
    assert NO_TOOLS.available == frozenset()
    assert NO_TOOLS.missing_reason("ffprobe") == "ffprobe is not installed"
    assert (
        NO_TOOLS.missing_reason(*tools_for("video/mp4")) == "ffprobe and ffmpeg are not installed"
    )
    assert (
        NO_TOOLS.missing_reason(*TOOL_NAMES)
        == "ffprobe, ffmpeg, pdfinfo and pdftoppm are not installed"
    )
    assert NO_TOOLS.missing_reason(*tools_for("image/png")) is None


def test_some_tools_missing(tmp_path: Path) -> None:
    tools = ProbeTools(ffprobe="/usr/bin/ffprobe", ffmpeg=None, pdfinfo=None, pdftoppm=None)

    assert tools.available == frozenset({"ffprobe"})
    assert tools.missing("ffprobe", "ffmpeg") == ("ffmpeg",)
    assert tools.missing_reason(*tools_for("audio/mpeg")) is None
    assert tools.missing_reason(*tools_for("video/webm")) == "ffmpeg is not installed"
    assert tools.missing_reason(*tools_for("application/pdf")) == (
        "pdfinfo and pdftoppm are not installed"
    )
    with pytest.raises(ValueError, match="unknown tool"):
        tools.missing("convert")


def test_tools_for() -> None:
    assert tools_for("video/mp4") == ("ffprobe", "ffmpeg")
    assert tools_for("audio/ogg") == ("ffprobe",)
    assert tools_for("application/pdf") == ("pdfinfo", "pdftoppm")
    assert tools_for("application/msword") == ()
    assert tools_for("image/jpeg") == ()


def test_tools_are_found_on_path_and_limits_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ProbeTools().ffprobe == (os.path.abspath(FFPROBE) if FFPROBE else None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ProbeTools().available == frozenset()
    monkeypatch.chdir(tmp_path)
    assert ProbeTools(ffmpeg="bin/ffmpeg").ffmpeg == str(tmp_path / "bin" / "ffmpeg")
    for bad in ({"timeout_seconds": 0}, {"timeout_seconds": float("inf")}, {"max_output_bytes": 0}):
        with pytest.raises(ValueError):
            ProbeTools(**bad)  # type: ignore[arg-type]


def test_bad_arguments(samples: Samples, tools: ProbeTools, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out_path"):
        poster_frame(samples.clip, tmp_path / "poster.gif", tools)
    with pytest.raises(ValueError, match="max_px"):
        poster_frame(samples.clip, tmp_path / "poster.jpg", tools, max_px=0)
    with pytest.raises(ValueError, match="at_seconds"):
        poster_frame(samples.clip, tmp_path / "poster.jpg", tools, at_seconds=-1)
    assert not list(tmp_path.iterdir())


def test_errors_survive_rpc_serialisation() -> None:
    for error in (ToolTimeout("ffmpeg", 2.5), ToolOutputTooLarge("pdftoppm", 10), ProbeError("x")):
        rebuilt = type(error)(*json.loads(json.dumps(error.args)))
        assert str(rebuilt) == str(error)
