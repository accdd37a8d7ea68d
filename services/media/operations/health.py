"""What ``GET /health`` reports: each part the service needs, checked now."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from services.media.processing.imaging import DECODERS


def health_report(checks: Mapping[str, Callable[[], None]]) -> tuple[bool, dict[str, Any]]:
    """Run every check (each raises when its part is down); whether all passed, and the report.

    The image decoders present are listed too, for information: a format without its decoder
    here is stored but not processed, which does not make the service unhealthy.
    """
    report: dict[str, Any] = {}
    for name, check in checks.items():
        try:
            check()
            report[name] = {"ok": True}
        except Exception as exc:
            report[name] = {"ok": False, "error": str(exc) or type(exc).__name__}
    healthy = all(part["ok"] for part in report.values())
    report["status"] = "ok" if healthy else "unavailable"
    report["decoders"] = {name.lower(): present for name, present in DECODERS.items()}
    return healthy, report
