"""Facts and stills of video, audio and PDF files, from external tools run at arm's length.

``tools`` runs ffprobe, ffmpeg, pdfinfo and pdftoppm sandboxed (argv only, an empty scratch
directory, a time limit, an output cap, FFmpeg kept to one local file and an allow-list of
demuxers) and holds their configuration (`ProbeTools`) and errors; ``probe`` reads video and
audio facts from ffprobe, ``pdf`` PDF facts from pdfinfo, ``stills`` makes poster frames and PDF
previews. Modules that run a tool go through ``tools``; transcoding will land beside them.

Re-exported here: the names callers use (``processing.jobs`` imports this package as
``probing``).
"""

from services.media.processing.av.pdf import PdfFacts, probe_pdf
from services.media.processing.av.probe import AvFacts, probe_av
from services.media.processing.av.stills import (
    DEFAULT_MAX_PX,
    pdf_preview,
    poster_frame,
    poster_time,
)
from services.media.processing.av.tools import (
    TOOL_NAMES,
    ProbeError,
    ProbeTools,
    ToolOutputTooLarge,
    ToolTimeout,
    ToolUnavailable,
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
