"""Content sniffing: the real type of an upload, judged from its first bytes.

A file's name and the MIME type its uploader declares are hints at best and lies at worst, so the
service decides what a file is from its content. libmagic does most of the work; the checks here
cover what it gets wrong or leaves too vague on a truncated head, and make sure nothing a browser
would execute (HTML, SVG, XML, scripts) is ever reported as plain text or as an image format.
"""

from __future__ import annotations

import codecs
import re
import struct
import threading
from dataclasses import dataclass

import magic

from services.media.core.vocabulary import MediaType

__all__ = [
    "ACTIVE_CONTENT_TYPES",
    "SNIFF_BYTES",
    "Sniffed",
    "declared_type_conflicts",
    "media_type_of",
    "sniff",
]

SNIFF_BYTES = 64 * 1024
"""How many leading bytes callers should pass to `sniff`."""


@dataclass(frozen=True)
class Sniffed:
    """What the content of a file turned out to be."""

    mime_type: str
    media_type: MediaType


_OCTET_STREAM = "application/octet-stream"
_EMPTY = "application/x-empty"
_HTML = "text/html"
_SVG = "image/svg+xml"
_XHTML = "application/xhtml+xml"
_XML = "application/xml"
_SHELL = "application/x-sh"
_JAVASCRIPT = "text/javascript"
_OLE_STORAGE = "application/x-ole-storage"
_ZIP = "application/zip"
_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

ACTIVE_CONTENT_TYPES: frozenset[str] = frozenset({_HTML, _SVG, _XHTML, _XML, _JAVASCRIPT, _SHELL})
"""Types a browser (or a shell) may execute; only ever declared as exactly themselves."""

_DOCUMENT_TYPES = frozenset(
    {
        "application/pdf",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/rtf",
        "text/plain",
        "text/csv",
        "text/markdown",
        # The upload policy counts ZIP archives among documents.
        _ZIP,
    }
)
_DOCUMENT_PREFIXES = (
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.oasis.opendocument.",
)

# libmagic's (and clients') spellings mapped to the one name the service stores.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-m4a": "audio/mp4",
    "audio/x-flac": "audio/flac",
    "audio/mp3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg",
    "text/xml": _XML,
    "text/x-shellscript": _SHELL,
    "application/x-shellscript": _SHELL,
    "text/x-sh": _SHELL,
    "application/javascript": _JAVASCRIPT,
    "application/x-javascript": _JAVASCRIPT,
    "text/rtf": "application/rtf",
    "text/x-markdown": "text/markdown",
    "application/csv": "text/csv",
    "application/x-pdf": "application/pdf",
    "application/x-zip-compressed": _ZIP,
    "application/cdfv2": _OLE_STORAGE,
}

# Text types worth keeping over "text/plain" when libmagic names them.
_TEXT_SUBTYPES_KEPT = frozenset({"text/csv", "text/markdown", "application/rtf"})

# libmagic calls an OLE2 file by its application only when it can read the directory; anything
# vaguer (CDFV2, vnd.ms-office, ...) is reported as the bare container.
_OLE_SIGNATURE = bytes.fromhex("D0CF11E0A1B11AE1")
_OLE_APPLICATIONS = frozenset(
    {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint"}
)

_TEXT_SCAN_BYTES = 4096
# Markers of content a browser would render as markup, searched anywhere in the scanned text.
_MARKUP_MARKERS = (
    "<!doctype html",
    "<html",
    "<script",
    "<iframe",
    "<body",
    "<svg",
    "<?xml",
)
# WHATWG MIME sniffing treats a resource starting with any of these tags as HTML.
_HTML_LEADING_TAG = re.compile(
    r"<(?:!doctype html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--)"
    r"[ >]"
)
_XML_NOISE = re.compile(r"<!--.*?-->|<\?.*?\?>|<!\[CDATA\[.*?\]\]>", re.DOTALL)
_XML_ROOT = re.compile(r"<(?![?!/])(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")
# C0 controls (except \t \n \f \r), DEL and C1 controls never occur in real text.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")

_BOMS = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_magic = magic.Magic(mime=True)
# A libmagic handle is not thread-safe; python-magic happens to lock too, but that is its
# implementation detail, not a promise.
_magic_lock = threading.Lock()


def sniff(head: bytes) -> Sniffed:
    """Identify content from its first bytes (up to `SNIFF_BYTES` of them)."""
    head = bytes(head[:SNIFF_BYTES])
    if not head:
        return Sniffed(_EMPTY, MediaType.OTHER)
    mime_type = _sniff_signature(head) or _sniff_with_libmagic(head)
    return Sniffed(mime_type, media_type_of(mime_type))


def media_type_of(mime_type: str) -> MediaType:
    """The family of a MIME type."""
    essence = _essence(mime_type)
    top_level = essence.partition("/")[0]
    if top_level == "image":
        return MediaType.IMAGE
    if top_level == "video":
        return MediaType.VIDEO
    if top_level == "audio":
        return MediaType.AUDIO
    if essence in _DOCUMENT_TYPES or essence.startswith(_DOCUMENT_PREFIXES):
        return MediaType.DOCUMENT
    return MediaType.OTHER


def declared_type_conflicts(declared: str | None, sniffed: Sniffed) -> bool:
    """Whether a caller-declared MIME type contradicts what the content actually is.

    Only a different family counts, or active content declared as anything but itself; a wrong
    subtype within the family (a JPEG declared as PNG) is just a poor hint.
    """
    if not declared:
        return False
    essence = _canonical(declared)
    if essence in ("", _OCTET_STREAM):
        return False
    # Empty content is consistent with every type.
    if sniffed.mime_type == _EMPTY:
        return False
    if media_type_of(essence) != sniffed.media_type:
        return True
    return sniffed.mime_type in ACTIVE_CONTENT_TYPES and essence != sniffed.mime_type


def _essence(mime_type: str) -> str:
    """A MIME type without parameters, in lower case."""
    return mime_type.partition(";")[0].strip().lower()


def _canonical(mime_type: str) -> str:
    essence = _essence(mime_type)
    return _ALIASES.get(essence, essence)


def _sniff_signature(head: bytes) -> str | None:
    """Our own checks, for formats libmagic misnames or cannot judge from a truncated head."""
    if head.startswith(b"#!"):
        return _SHELL
    if head[4:8] == b"ftyp":
        return _sniff_iso_bmff(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _sniff_ebml(head)
    if head.startswith(b"RIFF"):
        form = head[8:12]
        if form == b"WAVE":
            return "audio/wav"
        if form == b"WEBP":
            return "image/webp"
        return None
    if head.startswith(b"OggS"):
        return _sniff_ogg(head)
    if head.startswith(b"ID3"):
        return _sniff_id3(head)
    if _is_mpeg_audio(head):
        return "audio/mpeg"
    return None


def _sniff_iso_bmff(head: bytes) -> str | None:
    major = head[8:12]
    if len(major) < 4:
        return None
    if major == b"qt  ":
        return "video/quicktime"
    if major in (b"M4A ", b"M4B "):
        return "audio/mp4"
    if major in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"):
        return "image/heic"
    if major in (b"avif", b"avis"):
        return "image/avif"
    if major in (b"mif1", b"msf1"):
        # The generic HEIF brands say "image", the compatible brands say which codec.
        (box_size,) = struct.unpack(">I", head[:4])
        compatible = head[16 : min(box_size, len(head))]
        brands = {compatible[i : i + 4] for i in range(0, len(compatible) - 3, 4)}
        return "image/avif" if brands & {b"avif", b"avis"} else "image/heic"
    return "video/mp4"


def _sniff_ebml(head: bytes) -> str | None:
    window = head[:64]
    at = window.find(b"\x42\x82", 4)
    if at < 0:
        return None
    size_and_start = _read_vint(window, at + 2)
    if size_and_start is None:
        return None
    size, start = size_and_start
    doctype = window[start : start + size].rstrip(b"\x00")
    if doctype == b"webm":
        return "video/webm"
    if doctype == b"matroska":
        return "video/x-matroska"
    return None


def _read_vint(data: bytes, at: int) -> tuple[int, int] | None:
    """An EBML variable-length integer at `at`: its value and the offset just past it."""
    if at >= len(data) or data[at] == 0:
        return None
    first = data[at]
    length = 8 - first.bit_length() + 1
    if at + length > len(data):
        return None
    value = first & (0xFF >> length)
    for byte in data[at + 1 : at + length]:
        value = value << 8 | byte
    return value, at + length


_OGG_AUDIO_CODECS = (b"\x01vorbis", b"OpusHead", b"\x7fFLAC", b"Speex   ")
_OGG_VIDEO_CODECS = (b"\x80theora", b"\x80daala", b"OVP80", b"BBCD\x00")


def _sniff_ogg(head: bytes) -> str | None:
    """Ogg's first pages each start one stream; any video stream makes the file a video."""
    audio = False
    at = 0
    while head.startswith(b"OggS", at) and len(head) >= at + 27:
        beginning_of_stream = head[at + 5] & 0x02
        if not beginning_of_stream:
            break
        segments = head[at + 26]
        table = head[at + 27 : at + 27 + segments]
        packet = head[at + 27 + segments :]
        if packet.startswith(_OGG_VIDEO_CODECS):
            return "video/ogg"
        audio = audio or packet.startswith(_OGG_AUDIO_CODECS)
        at += 27 + segments + sum(table)
    return "audio/ogg" if audio else None


def _sniff_id3(head: bytes) -> str:
    # ID3 tags also precede FLAC; the tag's size (syncsafe, 7 bits a byte) says where audio starts.
    size = 0
    for byte in head[6:10]:
        size = size << 7 | (byte & 0x7F)
    if head[10 + size : 14 + size] == b"fLaC":
        return "audio/flac"
    return "audio/mpeg"


# kbit/s by bitrate index, for (MPEG-1, layer) and (MPEG-2/2.5, layer).
_MPEG1_BITRATES = {
    1: (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    2: (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
}
_MPEG2_BITRATES = {
    1: (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    3: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Sample rates by version bits (0: MPEG-2.5, 2: MPEG-2, 3: MPEG-1).
_MPEG_SAMPLE_RATES = {
    0: (11025, 12000, 8000),
    2: (22050, 24000, 16000),
    3: (44100, 48000, 32000),
}


def _is_mpeg_audio(head: bytes) -> bool:
    """An MPEG audio frame at offset 0, followed by another one if the head reaches that far."""
    length = _mpeg_frame_length(head, 0)
    if length is None:
        return False
    if len(head) < length + 4:
        return True
    return _mpeg_frame_length(head, length) is not None


def _mpeg_frame_length(head: bytes, at: int) -> int | None:
    """The length of the MPEG audio frame whose header is at `at`, or None if there is none."""
    header = head[at : at + 4]
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    # 0xFF 0xFE is a UTF-16 byte order mark far more often than an MPEG-1 layer I frame.
    if at == 0 and header[1] == 0xFE:
        return None
    version = header[1] >> 3 & 0x03
    layer = 4 - (header[1] >> 1 & 0x03)
    bitrate_index = header[2] >> 4
    rate_index = header[2] >> 2 & 0x03
    padding = header[2] >> 1 & 0x01
    # Reserved values; free-format (bitrate 0) is too rare to be worth the false positives.
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    if header[3] & 0x03 == 2:
        return None
    bitrates = _MPEG1_BITRATES if version == 3 else _MPEG2_BITRATES
    bitrate = bitrates[layer][bitrate_index] * 1000
    sample_rate = _MPEG_SAMPLE_RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // sample_rate + padding) * 4
    if layer == 3 and version != 3:
        return 72 * bitrate // sample_rate + padding
    return 144 * bitrate // sample_rate + padding


def _sniff_with_libmagic(head: bytes) -> str:
    with _magic_lock:
        try:
            reported = _magic.from_buffer(head)
        except magic.MagicException:
            reported = _OCTET_STREAM
    mime_type = _canonical(reported or _OCTET_STREAM)
    if "/" not in mime_type:
        mime_type = _OCTET_STREAM

    if head.startswith(_OLE_SIGNATURE):
        return mime_type if mime_type in _OLE_APPLICATIONS else _OLE_STORAGE
    if mime_type == _ZIP:
        return _sniff_ooxml(head) or _ZIP
    if (
        mime_type.startswith("text/")
        or mime_type in ACTIVE_CONTENT_TYPES
        or (mime_type == _OCTET_STREAM and _is_utf8_text(head))
    ):
        return _sniff_text(head, mime_type)
    return mime_type


def _sniff_text(head: bytes, reported: str) -> str:
    """Text is plain only when nothing in it would make a browser treat it as markup."""
    markup = _sniff_markup(head)
    if markup is not None:
        return markup
    # libmagic's word stands when it calls the text active: never downgrade it to plain.
    if reported in ACTIVE_CONTENT_TYPES or reported in _TEXT_SUBTYPES_KEPT:
        return reported
    return "text/plain"


def _sniff_markup(head: bytes) -> str | None:
    text = _decode_for_scan(head).lower()
    found = [(at, marker) for marker in _MARKUP_MARKERS if (at := text.find(marker)) >= 0]
    if found:
        _, first = min(found)
        if first == "<svg":
            return _SVG
        if first == "<?xml":
            return _xml_flavour(text)
        return _HTML
    if _HTML_LEADING_TAG.match(text.lstrip()):
        return _HTML
    return None


def _xml_flavour(text: str) -> str:
    root = _XML_ROOT.search(_XML_NOISE.sub("", text))
    name = root.group(1) if root else ""
    if name == "svg":
        return _SVG
    if name == "html":
        return _XHTML
    return _XML


def _decode_for_scan(head: bytes) -> str:
    """Text decoded by its byte order mark (UTF-8 without one), the mark itself dropped."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return head[len(bom) : _TEXT_SCAN_BYTES + len(bom)].decode(encoding, "replace")
    return head[:_TEXT_SCAN_BYTES].decode("utf-8", "replace")


def _is_utf8_text(head: bytes) -> bool:
    # The head may end inside a multi-byte character: an incremental decoder forgives that.
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return _CONTROL_CHARS.search(text.removeprefix("\ufeff")) is None


def _sniff_ooxml(head: bytes) -> str | None:
    """Office Open XML from a ZIP's local headers, where libmagic only says "zip".

    libmagic 5.44 misses them when "word/" (etc.) directly follows "[Content_Types].xml".
    """
    names = _zip_entry_names(head)
    if "[Content_Types].xml" not in names:
        return None
    for name in names:
        if name.startswith("word/"):
            return _DOCX
        if name.startswith("xl/"):
            return _XLSX
        if name.startswith("ppt/"):
            return _PPTX
    return None


def _zip_entry_names(head: bytes, limit: int = 64) -> list[str]:
    """Names of the ZIP local file headers found in the head, in order."""
    names: list[str] = []
    at = 0
    while len(names) < limit and head.startswith(b"PK\x03\x04", at) and len(head) >= at + 30:
        flags, compressed_size = struct.unpack_from("<H10xI", head, at + 6)
        name_length, extra_length = struct.unpack_from("<HH", head, at + 26)
        name_end = at + 30 + name_length
        names.append(head[at + 30 : name_end].decode("utf-8", "replace"))
        data_start = name_end + extra_length
        # Streamed entries (bit 3) and ZIP64 ones do not record their size up front.
        if flags & 0x08 or compressed_size == 0xFFFFFFFF:
            at = head.find(b"PK\x03\x04", data_start)
            if at < 0:
                break
        else:
            at = data_start + compressed_size
    return names
