"""Logging set-up, the per-run line and counters, and the metrics read from the database."""

from __future__ import annotations

import base64
import inspect
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from nameko.containers import ServiceContainer
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook
from nameko.testing.utils import get_extension
from nameko.timer import timer
from nameko.web.handlers import http
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, update
from sqlalchemy.orm import sessionmaker
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from services.media import observability
from services.media.core import metrics
from services.media.core.ids import utcnow
from services.media.core.models import Media
from services.media.core.outbox import record_event
from services.media.core.settings import ConfigurationError
from services.media.dependencies import body_reader, chunk_reader
from services.media.exceptions import NotFound
from services.media.observability import (
    EXPECTED_ERROR_FILTER,
    EXPECTED_ERROR_MESSAGE,
    JsonLineFormatter,
    Observability,
    StderrHandler,
    TextFormatter,
    base64_size,
    configure_logging,
)
from services.media.operations import views as operations
from services.media.operations.exposition import exposition
from storage import new_key
from tests.conftest import REPO
from tests.files import png_bytes, upload_data

CALLS = "services.media.calls"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    calls_level = logging.getLogger(CALLS).level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger(CALLS).setLevel(calls_level)


# -- logging configuration ------------------------------------------------------------------


def test_the_handler_nameko_run_installs_is_replaced_once():
    root = logging.getLogger()
    # pytest's own capture handlers stay (a handler of an earlier test's container does not).
    kept = [handler for handler in root.handlers if not getattr(handler, "media_handler", False)]
    basic = logging.StreamHandler(sys.stderr)  # what logging.basicConfig() adds
    root.addHandler(basic)
    configure_logging({"LOG_FORMAT": "json", "LOG_LEVEL": "warning"})
    configure_logging({"LOG_FORMAT": "text", "LOG_LEVEL": "DEBUG"})  # a second container
    ours = [handler for handler in root.handlers if isinstance(handler, StderrHandler)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, TextFormatter)
    assert basic not in root.handlers
    assert all(handler in root.handlers for handler in kept)
    assert root.level == logging.DEBUG


def test_a_logging_dict_in_the_config_is_left_alone():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging({"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG", "LOGGING": {"version": 1}})
    assert root.handlers == handlers and root.level == level


@pytest.mark.parametrize(
    ("config", "wrong"),
    [({"LOG_FORMAT": "xml"}, "LOG_FORMAT"), ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL")],
)
def test_a_wrong_log_setting_stops_the_start(config, wrong):
    with pytest.raises(ConfigurationError, match=wrong):
        configure_logging(config)


def test_levels_by_name_or_number():
    configure_logging({"LOG_LEVEL": 10})
    assert logging.getLogger().level == logging.DEBUG
    configure_logging({})
    assert logging.getLogger().level == logging.INFO


def test_the_handler_follows_a_replaced_stderr(monkeypatch):
    handler = StderrHandler()
    handler.setFormatter(TextFormatter())
    replaced = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replaced)
    handler.emit(logging.makeLogRecord({"msg": "hello", "levelno": 20, "levelname": "INFO"}))
    assert "hello" in replaced.getvalue()


def _call_record(**extra: Any) -> logging.LogRecord:
    fields = {
        "call_id": "media.findOne.1",
        "parent_call_id": None,
        "caller": "u-1",
        "media_id": "m-1",
        "outcome": "NotFound",
    }
    record = logging.LogRecord(CALLS, logging.INFO, __file__, 1, "rpc findOne", (), None)
    record.__dict__.update(fields | extra)
    return record


def test_text_lines_carry_the_fields_after_the_message_and_before_a_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = _call_record()
    record.exc_info = exc_info
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith("rpc findOne call_id=media.findOne.1 caller=u-1 media_id=m-1")
    assert " INFO services.media.calls: " in first and "parent_call_id" not in first
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "RuntimeError: boom"
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "just %s", ("text",), None)
    assert TextFormatter().format(plain).endswith(" INFO x: just text")


def test_json_lines_have_timestamp_level_logger_message_and_the_fields():
    record = _call_record()
    record.created = 1_800_000_000.25
    line = json.loads(JsonLineFormatter().format(record))
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]
    assert line["timestamp"] == "2027-01-15T08:00:00.250Z"
    assert (line["level"], line["logger"], line["message"]) == ("INFO", CALLS, "rpc findOne")
    assert line["call_id"] == "media.findOne.1" and line["outcome"] == "NotFound"
    assert line["parent_call_id"] is None


# -- nameko's expected-error report ---------------------------------------------------------


def test_the_filter_matches_what_nameko_logs():
    assert repr(EXPECTED_ERROR_MESSAGE)[1:-1] in inspect.getsource(ServiceContainer._run_worker)


def test_only_expected_errors_of_observed_containers_are_dropped():
    observed = SimpleNamespace(container=SimpleNamespace(media_observed=True))
    other = SimpleNamespace(container=SimpleNamespace())

    def record(msg: str, *args: Any) -> logging.LogRecord:
        return logging.LogRecord("nameko.containers", 30, __file__, 1, msg, args, None)

    assert not EXPECTED_ERROR_FILTER.filter(record(EXPECTED_ERROR_MESSAGE, observed, "x"))
    assert EXPECTED_ERROR_FILTER.filter(record(EXPECTED_ERROR_MESSAGE, other, "x"))
    assert EXPECTED_ERROR_FILTER.filter(record("error handling worker %s: %s", observed, "x"))


# -- the provider in a container ------------------------------------------------------------


class Sample:
    name = "sample"
    observe = Observability()

    @rpc(expected_exceptions=(NotFound,))
    def findOne(self, id: str) -> dict[str, Any]:
        if id == "missing":
            raise NotFound(f"media {id!r} not found")
        return {"id": id, "mimeType": "image/png"}

    @rpc(expected_exceptions=(NotFound,))
    def upload_file(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"id": "m-new", "mimeType": "image/png"}

    @rpc
    def getUploadProgress(self, uploadId: str) -> dict[str, Any]:
        return {"uploadId": uploadId, "mediaId": "m-done"}

    @rpc
    def broken(self) -> None:
        raise RuntimeError("a bug")

    @timer(interval=3600)
    def tick(self) -> None:
        pass

    @http("GET", "/things/<string:media_id>")
    def thing(self, request: Any, media_id: str) -> Response:
        return Response("gone", status=410)


@pytest.fixture
def container(container_factory) -> Any:
    container = container_factory(Sample, {"AMQP_URI": "memory://", "LOG_FORMAT": "text"})
    get_extension(container, Observability).setup()  # what start() does, without a broker
    return container


def _lines(caplog: pytest.LogCaptureFixture, method: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == CALLS and r.method == method]


def test_a_refused_call_is_one_info_line_and_a_count(container, caplog):
    caplog.set_level(logging.INFO)
    before = sample("media_rpc_calls_total", method="findOne", outcome="NotFound")
    count = sample("media_rpc_duration_seconds_count", method="findOne")
    with entrypoint_hook(container, "findOne", context_data={"user_id": "u-5"}) as find_one:
        with pytest.raises(NotFound):
            find_one("missing")
    (line,) = _lines(caplog, "findOne")
    assert line.levelno == logging.INFO and line.exc_info is None
    assert line.getMessage().startswith("rpc findOne NotFound in ")
    assert line.getMessage().endswith(": media 'missing' not found")
    assert (line.caller, line.media_id, line.error) == (
        "u-5",
        "missing",
        "media 'missing' not found",
    )
    assert line.call_id.startswith("sample.findOne.")
    assert not [r for r in caplog.records if r.name == "nameko.containers" and r.levelno >= 30]
    assert sample("media_rpc_calls_total", method="findOne", outcome="NotFound") == before + 1
    assert sample("media_rpc_duration_seconds_count", method="findOne") == count + 1


def test_a_bug_keeps_nameko_traceback_and_logs_its_line_at_error(container, caplog):
    caplog.set_level(logging.INFO)
    with entrypoint_hook(container, "broken") as broken:
        with pytest.raises(RuntimeError):
            broken()
    (line,) = _lines(caplog, "broken")
    assert line.levelno == logging.ERROR and line.outcome == "RuntimeError"
    (report,) = [r for r in caplog.records if r.name == "nameko.containers" and r.exc_info]
    assert report.levelno == logging.ERROR and report.exc_info[0] is RuntimeError


def test_the_media_id_comes_from_the_arguments_or_the_result(container, caplog):
    caplog.set_level(logging.INFO)
    with entrypoint_hook(container, "findOne") as find_one:
        find_one(id="by-keyword")
        find_one("by-position")
    with entrypoint_hook(container, "upload_file") as upload_file:
        upload_file({"content": "aGVsbG8="})
    with entrypoint_hook(container, "getUploadProgress") as progress:
        progress("u-1")
    assert [line.media_id for line in _lines(caplog, "findOne")] == ["by-keyword", "by-position"]
    assert [line.media_id for line in _lines(caplog, "upload_file")] == ["m-new"]
    assert [line.media_id for line in _lines(caplog, "getUploadProgress")] == ["m-done"]


def test_upload_content_is_counted_in(container):
    before = sample("media_received_bytes_total", via="upload_file")
    with entrypoint_hook(container, "upload_file") as upload_file:
        upload_file({"content": base64.b64encode(b"x" * 1000).decode()})
        upload_file({"content": None})
        upload_file("not a mapping")
    assert sample("media_received_bytes_total", via="upload_file") == before + 1000


def test_timer_runs_and_http_requests_are_counted_and_logged(container, caplog):
    caplog.set_level(logging.INFO)
    runs = sample("media_timer_runs_total", timer="tick", outcome="ok")
    with entrypoint_hook(container, "tick") as tick:
        tick()
    assert sample("media_timer_runs_total", timer="tick", outcome="ok") == runs + 1
    (run,) = _lines(caplog, "tick")
    assert run.kind == "timer" and run.getMessage().startswith("timer tick ok in ")

    route = "/things/<string:media_id>"
    labels = {"route": route, "http_method": "GET", "status": "410"}
    responses = sample("media_http_responses_total", **labels)
    request = EnvironBuilder(path="/things/m-7", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    with entrypoint_hook(container, "thing") as thing:
        assert thing(request.get_request(), media_id="m-7").status_code == 410
    assert sample("media_http_responses_total", **labels) == responses + 1
    (line,) = _lines(caplog, "thing")
    assert (line.kind, line.route, line.status, line.http_method) == ("http", route, 410, "GET")
    assert (line.media_id, line.client) == ("m-7", "10.1.2.3")
    assert line.getMessage().startswith(f"thing GET {route} 410 in ")


def test_a_hidden_line_is_not_built_but_still_counted(container, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    logging.getLogger(CALLS).setLevel(logging.WARNING)
    built: list[Any] = []
    monkeypatch.setattr(observability, "_media_id", lambda *args: built.append(args))
    before = sample("media_rpc_calls_total", method="findOne", outcome="ok")
    with entrypoint_hook(container, "findOne") as find_one:
        find_one("m-1")
    assert not _lines(caplog, "findOne") and not built  # the line's fields were not built
    assert sample("media_rpc_calls_total", method="findOne", outcome="ok") == before + 1


def test_a_failure_of_the_instrumentation_does_not_fail_the_call(container, caplog, monkeypatch):
    def broken(*args: Any) -> None:
        raise ValueError("instrumentation bug")

    monkeypatch.setattr(observability, "_media_id", broken)
    with entrypoint_hook(container, "findOne") as find_one:
        assert find_one("m-1") == {"id": "m-1", "mimeType": "image/png"}
    assert any("could not count the end" in r.getMessage() for r in caplog.records)


def test_base64_size_is_the_decoded_size():
    for length in range(12):
        text = base64.b64encode(b"a" * length).decode()
        assert base64_size(text) == length
    assert base64_size(None) == base64_size(b"abcd") == base64_size("") == 0


# -- bytes through the HTTP side ------------------------------------------------------------


@pytest.mark.parametrize("blocking_io", [False, True])
def test_file_chunks_are_counted_once_the_server_wrote_them(blocking_io):
    read = chunk_reader(SimpleNamespace(blocking_io=blocking_io))
    before = sample("media_sent_bytes_total")
    assert list(read(iter([b"a" * 10, b"b" * 20]))) == [b"a" * 10, b"b" * 20]
    assert sample("media_sent_bytes_total") == before + 30
    # A client gone after the first chunk: the server closes the body while writing the second.
    closed: list[bool] = []

    class Chunks:
        def __init__(self) -> None:
            self.items = iter([b"a" * 10, b"b" * 20, b"c" * 40])

        def __iter__(self) -> Chunks:
            return self

        def __next__(self) -> bytes:
            return next(self.items)

        def close(self) -> None:
            closed.append(True)

    body = read(Chunks())
    next(body), next(body)
    body.close()
    assert sample("media_sent_bytes_total") == before + 40 and closed == [True]


def test_tus_bodies_are_counted_as_read():
    before = sample("media_received_bytes_total", via="tus")
    request = SimpleNamespace(environ={"wsgi.input": io.BytesIO(b"z" * 300_000)}, headers={})
    assert sum(len(block) for block in body_reader(5)(request, 300_000)) == 300_000
    assert sample("media_received_bytes_total", via="tus") == before + 300_000


# -- timers' counts, over the real catalog --------------------------------------------------


def test_the_sweeper_counts_what_it_deleted_and_marked(service, storage, storage_root, sessions):
    deleted = sample("media_sweeper_deleted_objects_total")
    marked = sample("media_sweeper_marked_missing_total")
    gone = service.upload_file(upload_data(b"notes\n", name="notes.txt"))
    service.upload_file(upload_data(b"more notes\n", name="more.txt"))
    orphans = [new_key(), new_key()]
    for key in orphans:
        storage.put(key, [png_bytes()], "image/png")
    then = time.time() - 2 * 3600
    for key in orphans:
        os.utime(storage_root / key, (then, then))
    with sessions.begin() as session:
        session.execute(update(Media).values(created_at=utcnow() - timedelta(hours=2)))
        key = session.get(Media, gone["id"]).storage_key
    storage.delete(key)
    service.sweep_storage()
    assert sample("media_sweeper_deleted_objects_total") == deleted + 2
    assert sample("media_sweeper_marked_missing_total") == marked + 1
    service.sweep_storage()
    assert sample("media_sweeper_deleted_objects_total") == deleted + 2


def test_the_purge_counts_the_media_it_took_up(service, sessions, settings):
    before = sample("media_purged_media_total")
    ids = [service.upload_file(upload_data(b"n%d\n" % i, name="n.txt"))["id"] for i in range(3)]
    for media_id in ids[:2]:
        service.remove(media_id)
    with sessions.begin() as session:
        session.execute(
            update(Media)
            .where(Media.deleted_at.is_not(None))
            .values(deleted_at=utcnow() - settings.retention - timedelta(seconds=1))
        )
    service.purge_expired()
    assert sample("media_purged_media_total") == before + 2


# -- gauges read from the database ----------------------------------------------------------


def _scrape_errors() -> float:
    (family,) = metrics.scrape_errors.collect()
    return next(s.value for s in family.samples if s.name.endswith("_total"))


def _families(text: bytes) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def test_the_gauges_are_the_operations_views(service, sessions):
    service.upload_file(upload_data(png_bytes(), name="a.png"))  # PROCESSING until processed
    service.initiateUpload({"originalName": "b.png", "userId": "u-1", "size": 10})
    with sessions.begin() as session:
        record_event(session, "media_updated", media={"id": "x"})
    families = _families(exposition(sessions))
    processing = operations.processing_backlog(sessions)
    outbox = operations.outbox_backlog(sessions)
    states = operations.upload_sessions_by_state(sessions)

    def value(name: str, **labels: str) -> float:
        (found,) = [s.value for s in families[name].samples if s.labels == labels]
        return found

    assert value("media_processing_queue_jobs") == processing.count == 1
    assert value("media_outbox_pending_events") == outbox.count >= 1
    assert 0 <= value("media_outbox_oldest_pending_age_seconds") <= outbox.oldest_age_seconds
    assert value("media_upload_sessions", state="PENDING") == states["PENDING"] == 1
    assert value("media_upload_sessions", state="EXPIRED") == 0
    assert families["media_upload_sessions"].type == "gauge"
    assert families["media_rpc_calls"].type == "counter"


def test_empty_queues_have_age_zero(sessions):
    families = _families(exposition(sessions))
    for name in (
        "media_processing_oldest_job_age_seconds",
        "media_outbox_oldest_pending_age_seconds",
    ):
        assert [s.value for s in families[name].samples] == [0.0]


def test_a_database_down_during_a_scrape_leaves_out_only_its_gauges(tmp_path, caplog):
    broken = sessionmaker(bind=create_engine(f"sqlite:///{tmp_path}/no/such/folder/media.db"))
    errors = _scrape_errors()
    families = _families(exposition(broken))
    assert "media_processing_queue_jobs" not in families
    assert "media_upload_sessions" not in families
    assert "media_rpc_calls" in families and "media_processing_failures" in families
    (scraped,) = families["media_metrics_scrape_errors"].samples
    assert scraped.value == errors + 1
    assert "database gauges could not be read" in caplog.text
    broken.kw["bind"].dispose()


# -- the docs and the dashboard name what /metrics serves -----------------------------------

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _served(sessions: sessionmaker) -> dict[str, str]:
    """Metric names as documented (counters with ``_total``) -> their type."""
    return {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in text_string_to_metric_families(exposition(sessions).decode())
        if family.name.startswith("media_") and not family.name.endswith("_created")
    }


def test_every_metric_is_documented_with_its_type(sessions):
    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("## Metrics") : text.index("## Admin CLI")]
    rows = dict(re.findall(r"^\| `(media_[a-z_]+)` \| ([a-z]+)", section, re.MULTILINE))
    assert rows == _served(sessions)


def test_the_dashboard_queries_only_metrics_that_exist(sessions):
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    served = _served(sessions)
    samples = {
        name.removesuffix("_total") + suffix
        for name, kind in served.items()
        for suffix in SUFFIXES[kind]
    }
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"media_[a-z_]+", target["expr"])
    }
    assert queried and queried <= samples
    # Every metric has a panel.
    assert {
        name for name in served if any(s.startswith(name.removesuffix("_total")) for s in queried)
    } == set(served)
