"""The text exposition of ``/metrics``: every metric of the registry, then the gauges read
from the database at scrape time through the operations views."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.orm import sessionmaker

from services.media.core.metrics import scrape_errors
from services.media.operations import views as operations

log = logging.getLogger(__name__)


class DatabaseGauges:
    """A prometheus collector reading the backlogs and upload sessions of one database.

    A failure of the database does not fail the scrape: the gauges read before it are reported,
    the rest are left out, and ``media_metrics_scrape_errors_total`` counts the scrape.
    """

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        try:
            processing = operations.processing_backlog(self.sessions)
            yield _gauge(
                "media_processing_queue_jobs",
                "Processing jobs waiting or under way.",
                processing.count,
            )
            yield _gauge(
                "media_processing_oldest_job_age_seconds",
                "Age of the oldest processing job waiting or under way (0 when there is none).",
                processing.oldest_age_seconds or 0.0,
            )
            outbox = operations.outbox_backlog(self.sessions)
            yield _gauge(
                "media_outbox_pending_events",
                "Committed events not published yet.",
                outbox.count,
            )
            yield _gauge(
                "media_outbox_oldest_pending_age_seconds",
                "Age of the oldest committed event not published yet (0 when there is none).",
                outbox.oldest_age_seconds or 0.0,
            )
            states = operations.upload_sessions_by_state(self.sessions)
            sessions = GaugeMetricFamily(
                "media_upload_sessions", "Upload sessions, by state.", labels=["state"]
            )
            # Every state comes, 0 included: a series an alert watches does not vanish.
            for state, count in states.items():
                sessions.add_metric([state], count)
            yield sessions
        except Exception as exc:
            scrape_errors.inc()
            log.warning("metrics: the database gauges could not be read: %s", exc)
        yield from scrape_errors.collect()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def exposition(sessions: sessionmaker) -> bytes:
    """The text exposition of every metric: the registry's, then the database gauges."""
    return generate_latest(REGISTRY) + generate_latest(DatabaseGauges(sessions))
