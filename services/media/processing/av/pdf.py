"""Facts about PDF files, as pdfinfo reports them.

pdfinfo runs through `tools._run`; its report is read defensively, as hostile input (a document's
own strings can imitate the lines that follow them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from services.media.processing.av.tools import (
    ProbeError,
    ProbeTools,
    _failure,
    _float,
    _input_file,
    _positive_float,
    _positive_int,
    _run,
    _scratch,
)

__all__ = ["PdfFacts", "probe_pdf"]

_MAX_TITLE_CHARS = 500
_PAGE_SIZE = re.compile(r"([0-9.]+) x ([0-9.]+) pts")
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")


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
