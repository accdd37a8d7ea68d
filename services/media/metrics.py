"""Prometheus metrics of the service, in the process's default registry (served on /metrics).

A plain module of metric objects: domain code may count on them without knowing about nameko.
"""

from __future__ import annotations

from prometheus_client import Counter

processing_failures = Counter(
    "media_processing_failures_total",
    "Processing jobs that did not succeed, by kind: the file was refused (file), a dependency "
    "was down and the job will be retried (dependency), or our own code failed (defect).",
    ["kind"],
)
