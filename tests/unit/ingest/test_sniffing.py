"""Sniffing real bytes: every sample is built here, nothing is mocked."""

from __future__ import annotations

import io
import random
import struct
import wave
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from services.media.core.vocabulary import MediaType
from services.media.ingest.sniffing import (
    SNIFF_BYTES,
    Sniffed,
    declared_type_conflicts,
    media_type_of,
    sniff,
)

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, fmt)
    return buffer.getvalue()


def zip_bytes(*names: str, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name in names:
            archive.writestr(name, '<?xml version="1.0"?><x/>')
    return buffer.getvalue()


def wav_bytes() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 800)
    return buffer.getvalue()


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def iso_bmff(major: bytes, *compatible: bytes) -> bytes:
    ftyp = box(b"ftyp", major + b"\x00\x00\x02\x00" + b"".join(compatible or (major,)))
    return ftyp + box(b"free", b"") + box(b"mdat", bytes(64))


def ebml(doctype: bytes) -> bytes:
    body = (
        b"\x42\x86\x81\x01"  # EBMLVersion 1
        b"\x42\xf7\x81\x01"  # EBMLReadVersion 1
        b"\x42\xf2\x81\x04"  # EBMLMaxIDLength 4
        b"\x42\xf3\x81\x08"  # EBMLMaxSizeLength 8
        + b"\x42\x82"
        + bytes([0x80 | len(doctype)])
        + doctype
        + b"\x42\x87\x81\x04"  # DocTypeVersion 4
        b"\x42\x85\x81\x02"  # DocTypeReadVersion 2
    )
    segment = b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(body)]) + body + segment


def ogg_page(packet: bytes, *, first: bool = True, serial: int = 1) -> bytes:
    header_type = 0x02 if first else 0x00
    header = (
        b"OggS\x00"
        + bytes([header_type])
        + bytes(8)
        + struct.pack("<I", serial)
        + bytes(4)  # page sequence
        + bytes(4)  # CRC, which no sniffer checks
        + bytes([1, len(packet)])
    )
    return header + packet


VORBIS_ID = b"\x01vorbis" + bytes(4) + b"\x02\x44\xac\x00\x00" + bytes(12) + b"\xb8\x01"
OPUS_ID = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
THEORA_ID = b"\x80theora\x03\x02\x01" + bytes(33)

# MPEG-1 layer III, 128 kbit/s, 44.1 kHz: 417-byte frames.
MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)
ID3_TAG = b"ID3\x03\x00\x00\x00\x00\x00\x0a" + bytes(10)

PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
    b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>\nendobj\n"
    b"xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n"
    b"0000000058 00000 n \n0000000115 00000 n \n"
    b"trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n188\n%%EOF\n"
)

PNG = image_bytes("PNG")
JPEG = image_bytes("JPEG")
HTML = b"<!DOCTYPE html>\n<html><head><title>cat</title></head><body>meow</body></html>\n"


@pytest.mark.parametrize(
    ("content", "mime_type", "media_type"),
    [
        pytest.param(PNG, "image/png", MediaType.IMAGE, id="png"),
        pytest.param(JPEG, "image/jpeg", MediaType.IMAGE, id="jpeg"),
        pytest.param(image_bytes("GIF"), "image/gif", MediaType.IMAGE, id="gif"),
        pytest.param(image_bytes("WEBP"), "image/webp", MediaType.IMAGE, id="webp"),
        pytest.param(image_bytes("BMP"), "image/bmp", MediaType.IMAGE, id="bmp"),
        pytest.param(image_bytes("TIFF"), "image/tiff", MediaType.IMAGE, id="tiff"),
        pytest.param(PNG[:16], "image/png", MediaType.IMAGE, id="png-truncated-to-16-bytes"),
        pytest.param(iso_bmff(b"heic", b"mif1", b"heic"), "image/heic", MediaType.IMAGE, id="heic"),
        pytest.param(iso_bmff(b"mif1", b"mif1", b"heic"), "image/heic", MediaType.IMAGE, id="heif"),
        pytest.param(iso_bmff(b"avif", b"mif1", b"avif"), "image/avif", MediaType.IMAGE, id="avif"),
        pytest.param(
            iso_bmff(b"mif1", b"mif1", b"avif"), "image/avif", MediaType.IMAGE, id="avif-mif1"
        ),
        pytest.param(PDF, "application/pdf", MediaType.DOCUMENT, id="pdf"),
        pytest.param(
            zip_bytes("[Content_Types].xml", "word/document.xml"),
            DOCX,
            MediaType.DOCUMENT,
            id="docx",
        ),
        pytest.param(
            zip_bytes(
                "[Content_Types].xml",
                "_rels/.rels",
                "word/document.xml",
                compression=zipfile.ZIP_STORED,
            ),
            DOCX,
            MediaType.DOCUMENT,
            id="docx-stored-with-rels",
        ),
        pytest.param(
            zip_bytes("[Content_Types].xml", "xl/workbook.xml"),
            XLSX,
            MediaType.DOCUMENT,
            id="xlsx",
        ),
        pytest.param(
            zip_bytes("notes.txt", "word/document.xml"),
            "application/zip",
            MediaType.DOCUMENT,
            id="zip-with-word-folder-but-no-content-types",
        ),
        pytest.param(
            zip_bytes("a.txt", "b/c.txt"), "application/zip", MediaType.DOCUMENT, id="zip"
        ),
        pytest.param(
            bytes.fromhex("D0CF11E0A1B11AE1") + bytes(504),
            "application/x-ole-storage",
            MediaType.OTHER,
            id="bare-ole2",
        ),
        pytest.param(iso_bmff(b"isom", b"isom", b"mp41"), "video/mp4", MediaType.VIDEO, id="mp4"),
        pytest.param(iso_bmff(b"mp42", b"mp42", b"avc1"), "video/mp4", MediaType.VIDEO, id="mp42"),
        pytest.param(iso_bmff(b"qt  "), "video/quicktime", MediaType.VIDEO, id="mov"),
        pytest.param(iso_bmff(b"M4A ", b"M4A ", b"isom"), "audio/mp4", MediaType.AUDIO, id="m4a"),
        pytest.param(iso_bmff(b"M4B "), "audio/mp4", MediaType.AUDIO, id="m4b"),
        pytest.param(ebml(b"webm"), "video/webm", MediaType.VIDEO, id="webm"),
        pytest.param(ebml(b"matroska"), "video/x-matroska", MediaType.VIDEO, id="mkv"),
        pytest.param(ID3_TAG + MP3_FRAME * 3, "audio/mpeg", MediaType.AUDIO, id="mp3-id3"),
        pytest.param(MP3_FRAME * 3, "audio/mpeg", MediaType.AUDIO, id="mp3-frame-sync"),
        pytest.param(MP3_FRAME[:4], "audio/mpeg", MediaType.AUDIO, id="mp3-single-header"),
        pytest.param(
            ID3_TAG + b"fLaC\x00\x00\x00\x22" + bytes(34),
            "audio/flac",
            MediaType.AUDIO,
            id="flac-behind-id3",
        ),
        pytest.param(b"fLaC\x00\x00\x00\x22" + bytes(34), "audio/flac", MediaType.AUDIO, id="flac"),
        pytest.param(wav_bytes(), "audio/wav", MediaType.AUDIO, id="wav"),
        pytest.param(ogg_page(VORBIS_ID), "audio/ogg", MediaType.AUDIO, id="ogg-vorbis"),
        pytest.param(ogg_page(OPUS_ID), "audio/ogg", MediaType.AUDIO, id="ogg-opus"),
        pytest.param(ogg_page(THEORA_ID), "video/ogg", MediaType.VIDEO, id="ogg-theora"),
        pytest.param(
            ogg_page(VORBIS_ID) + ogg_page(THEORA_ID, serial=2),
            "video/ogg",
            MediaType.VIDEO,
            id="ogg-vorbis-then-theora",
        ),
        pytest.param(b"", "application/x-empty", MediaType.OTHER, id="empty"),
        pytest.param(
            random.Random(20240521).randbytes(4096),
            "application/octet-stream",
            MediaType.OTHER,
            id="random-bytes",
        ),
    ],
)
def test_sniffs_binary_formats(content: bytes, mime_type: str, media_type: MediaType) -> None:
    assert sniff(content) == Sniffed(mime_type, media_type)


@pytest.mark.parametrize(
    ("content", "mime_type"),
    [
        pytest.param("Grüße aus Köln — ½ € ✓\nzweite Zeile\n".encode(), "text/plain", id="utf8"),
        pytest.param(b"\xef\xbb\xbfhello, world\n", "text/plain", id="utf8-bom"),
        pytest.param(b"just some words\r\n\tindented\f\n", "text/plain", id="ascii-whitespace"),
        pytest.param(b"a, b < c and d > e\n", "text/plain", id="angle-brackets"),
        pytest.param(b"name,age\nada,36\nalan,41\ngrace,85\n", "text/csv", id="csv"),
        pytest.param(b"{\\rtf1\\ansi Hello}\n", "application/rtf", id="rtf"),
        pytest.param(HTML, "text/html", id="html-doctype"),
        pytest.param(b"<!doctype html><title>x</title>", "text/html", id="html-lower-doctype"),
        pytest.param(b"\n\n   \t<HTML><BODY>Hi</BODY></HTML>", "text/html", id="html-upper-ws"),
        pytest.param(b"\xef\xbb\xbf  <Html lang=en>", "text/html", id="html-bom"),
        pytest.param(b"<sCrIpT>alert(1)</script>", "text/html", id="script"),
        pytest.param(b'<iframe src="https://example.com"></iframe>', "text/html", id="iframe"),
        pytest.param(b"<body onload=alert(1)>", "text/html", id="body"),
        pytest.param(
            b"meeting notes\n" * 50 + b"<script>alert(1)</script>\n",
            "text/html",
            id="script-deep-in-text",
        ),
        pytest.param(b"<p>hello</p>\n", "text/html", id="whatwg-leading-tag"),
        pytest.param(b"<head><title>x</title></head>", "text/html", id="libmagic-html"),
        pytest.param(
            "\ufeff<html><body>x</body></html>".encode("utf-16-le"),
            "text/html",
            id="html-utf16",
        ),
        pytest.param(
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "image/svg+xml",
            id="svg-with-script",
        ),
        pytest.param(
            b'<?xml version="1.0"?>\n<!-- a <drawing> -->\n'
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd">\n'
            b'<svg:svg xmlns:svg="http://www.w3.org/2000/svg"/>',
            "image/svg+xml",
            id="svg-xml-prefixed",
        ),
        pytest.param(
            b'<?xml version="1.0" encoding="UTF-8"?>\n<note><to>Tove</to></note>\n',
            "application/xml",
            id="xml",
        ),
        pytest.param(
            b'<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>',
            "application/xhtml+xml",
            id="xhtml",
        ),
        pytest.param(b"#!/bin/sh\necho hello\n", "application/x-sh", id="shell"),
        pytest.param(b"#!/usr/bin/env python3\nprint(1)\n", "application/x-sh", id="python"),
    ],
)
def test_sniffs_text_and_active_content(content: bytes, mime_type: str) -> None:
    assert sniff(content).mime_type == mime_type


def test_html_named_like_an_image_is_still_html() -> None:
    # The name "cat.png" never reaches the sniffer: only the bytes count.
    assert sniff(HTML) == Sniffed("text/html", MediaType.OTHER)


def test_svg_is_reported_as_an_image() -> None:
    assert sniff(b"<svg/>").media_type is MediaType.IMAGE


def test_text_cut_inside_a_multibyte_character_is_still_text() -> None:
    text = "ü".encode() * (SNIFF_BYTES // 2 + 10)
    assert sniff(text[: SNIFF_BYTES - 1]).mime_type == "text/plain"


def test_docx_written_to_a_stream_is_still_docx() -> None:
    # An unseekable target makes zipfile stream entries, with sizes after the data (flag bit 3).
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, chunk: bytes) -> int:
            self.data += chunk
            return len(chunk)

    target = Unseekable()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as entry:
            entry.write(b"<w:document/>")
    assert sniff(bytes(target.data)).mime_type == DOCX


def test_sniffing_from_many_threads_at_once() -> None:
    samples = {PNG: "image/png", JPEG: "image/jpeg", PDF: "application/pdf", HTML: "text/html"}
    work = list(samples) * 50
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(sniff, work))
    assert [result.mime_type for result in results] == [samples[content] for content in work]


def test_only_the_first_sniff_bytes_count() -> None:
    assert sniff(PNG + bytes(SNIFF_BYTES)).mime_type == "image/png"


def test_control_characters_are_not_plain_text() -> None:
    assert sniff(b"\x01\x02\x03\x04\x05\x06\x07\x0e\x0f\x10" * 20).mime_type != "text/plain"


@pytest.mark.parametrize(
    ("mime_type", "media_type"),
    [
        ("image/png", MediaType.IMAGE),
        ("image/svg+xml", MediaType.IMAGE),
        ("IMAGE/JPEG; q=1", MediaType.IMAGE),
        ("video/mp4", MediaType.VIDEO),
        ("video/x-matroska", MediaType.VIDEO),
        ("audio/mpeg", MediaType.AUDIO),
        ("audio/ogg", MediaType.AUDIO),
        ("application/pdf", MediaType.DOCUMENT),
        ("application/msword", MediaType.DOCUMENT),
        (DOCX, MediaType.DOCUMENT),
        ("application/vnd.oasis.opendocument.text", MediaType.DOCUMENT),
        ("text/plain", MediaType.DOCUMENT),
        ("text/plain; charset=utf-8", MediaType.DOCUMENT),
        ("text/csv", MediaType.DOCUMENT),
        ("text/markdown", MediaType.DOCUMENT),
        ("application/rtf", MediaType.DOCUMENT),
        ("application/zip", MediaType.DOCUMENT),
        ("text/html", MediaType.OTHER),
        ("application/xml", MediaType.OTHER),
        ("application/x-7z-compressed", MediaType.OTHER),
        ("application/octet-stream", MediaType.OTHER),
        ("nonsense", MediaType.OTHER),
    ],
)
def test_media_type_of(mime_type: str, media_type: MediaType) -> None:
    assert media_type_of(mime_type) is media_type


@pytest.mark.parametrize(
    ("declared", "content", "conflicts"),
    [
        pytest.param("image/png", HTML, True, id="png-declared-html-content"),
        pytest.param("image/png", JPEG, False, id="png-declared-jpeg-content"),
        pytest.param("application/pdf", PNG, True, id="pdf-declared-png-content"),
        pytest.param(None, HTML, False, id="nothing-declared-html"),
        pytest.param(None, PNG, False, id="nothing-declared-png"),
        pytest.param("", PDF, False, id="empty-declared"),
        pytest.param("application/octet-stream", PNG, False, id="octet-stream-declared"),
        pytest.param("application/octet-stream", HTML, False, id="octet-stream-declared-html"),
        pytest.param("IMAGE/PNG; x=y", PNG, False, id="case-and-parameters"),
        pytest.param("text/plain", HTML, True, id="plain-declared-html-content"),
        pytest.param("text/html", HTML, False, id="html-declared-html-content"),
        pytest.param("TEXT/HTML; charset=utf-8", HTML, False, id="html-with-charset"),
        pytest.param("image/png", b"<svg/>", True, id="png-declared-svg-content"),
        pytest.param("image/svg+xml", b"<svg/>", False, id="svg-declared-svg-content"),
        pytest.param("text/xml", b'<?xml version="1.0"?><a/>', False, id="xml-alias"),
        pytest.param("text/plain", PDF, False, id="same-document-family"),
        pytest.param("video/mp4", iso_bmff(b"isom"), False, id="mp4"),
        pytest.param("audio/mpeg", iso_bmff(b"isom"), True, id="audio-declared-video"),
        pytest.param("image/png", b"", False, id="empty-content"),
    ],
)
def test_declared_type_conflicts(declared: str | None, content: bytes, conflicts: bool) -> None:
    assert declared_type_conflicts(declared, sniff(content)) is conflicts
