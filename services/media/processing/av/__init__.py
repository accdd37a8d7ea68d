"""Facts and stills of video, audio and PDF files, from external tools run at arm's length.

Everything is in ``tools`` for now. Re-exported here: the names callers use
(``processing.jobs`` imports this package as ``probing``).
"""

from services.media.processing.av.tools import (
    DEFAULT_MAX_PX,
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

__all__ = [
    "DEFAULT_MAX_PX",
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
