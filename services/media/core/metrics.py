"""Prometheus metrics of the service, in the process's default registry (served on /metrics).

A plain module of metric objects: domain code may count on them without knowing about nameko.
The gauges read from the database are not kept in the registry: :func:`exposition` computes
them on each scrape, from the sessions of the service answering it.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds. RPC calls take about a millisecond when nothing is wrong, an upload of 11 MiB a few
# hundred; timers (the sweeper over a large bucket) may run for minutes.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TIMER_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

processing_failures = Counter(
    "media_processing_failures_total",
    "Processing jobs that did not succeed, by kind: the file was refused (file), a dependency "
    "was down and the job will be retried (dependency), or our own code failed (defect).",
    ["kind"],
)

# -- entrypoints (counted by services.media.observability.Observability) --------------------

rpc_calls = Counter(
    "media_rpc_calls_total",
    "RPC calls handled, by method and outcome (ok, or the error class the caller received).",
    ["method", "outcome"],
)
rpc_duration = Histogram(
    "media_rpc_duration_seconds",
    "Time spent handling an RPC call, from the worker's start to its result.",
    ["method"],
    buckets=CALL_BUCKETS,
)
http_responses = Counter(
    "media_http_responses_total",
    "HTTP responses of the service's own endpoints, by route, HTTP method and status.",
    ["route", "http_method", "status"],
)
http_duration = Histogram(
    "media_http_duration_seconds",
    "Time until an HTTP endpoint returned its response (a streamed body is sent after it).",
    ["route"],
    buckets=CALL_BUCKETS,
)
timer_runs = Counter(
    "media_timer_runs_total",
    "Runs of the background timers, by timer and outcome (ok, or the error class).",
    ["timer", "outcome"],
)
timer_duration = Histogram(
    "media_timer_duration_seconds",
    "Time a background timer's run took.",
    ["timer"],
    buckets=TIMER_BUCKETS,
)

# -- bytes --------------------------------------------------------------------------------

received_bytes = Counter(
    "media_received_bytes_total",
    "File bytes received, by way in: upload_file and uploadPart (decoded size of the base64 "
    "content as sent, accepted or not) and tus (request bodies as read).",
    ["via"],
)
sent_bytes = Counter(
    "media_sent_bytes_total",
    "File bytes the file endpoint handed to the web server for sending (originals and variants).",
)

# -- background jobs ----------------------------------------------------------------------

sweeper_deleted_objects = Counter(
    "media_sweeper_deleted_objects_total",
    "Stored objects the storage sweeper deleted because no record owned them.",
)
sweeper_marked_missing = Counter(
    "media_sweeper_marked_missing_total",
    "READY media the storage sweeper marked FAILED because their stored object was gone.",
)
purged_media = Counter(
    "media_purged_media_total",
    "Soft-deleted media past their retention period that the purge job took up.",
)

# -- read by operations.exposition on each scrape ----------------------------------------

scrape_errors = Counter(
    "media_metrics_scrape_errors_total",
    "Scrapes of /metrics whose database gauges could not be read (the other metrics were sent).",
    registry=None,  # reported by operations.exposition.DatabaseGauges, after the failure it counts
)
