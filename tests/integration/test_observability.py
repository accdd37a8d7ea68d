"""Logs and metrics of the running service: calls over RabbitMQ, scrapes of /metrics over HTTP."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import eventlet
import pytest
import requests
from nameko.exceptions import RemoteError
from prometheus_client.parser import text_string_to_metric_families

from services.media.catalog.records import MediaCatalog
from services.media.client import NotFound, ValidationError
from services.media.core.outbox import record_event
from services.media.operations import views as operations
from tests.conftest import REPO, SIGNING_KEY
from tests.files import b64, noisy_png_bytes, upload_data
from tests.integration.conftest import free_port

FILES_ROUTE = "/files/<string:media_id>"
UPLOAD_ROUTE = "/uploads/<string:upload_id>"


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """The service configures the root logger at start; later tests get it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Scrape:
    """One scrape of /metrics: samples by name and labels."""

    def __init__(self, base_url: str) -> None:
        response = requests.get(f"{base_url}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        self.content_type = response.headers["Content-Type"]
        self.text = response.text
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(response.text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples


def _moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


@pytest.fixture
def base_url(service_config: dict[str, Any]) -> str:
    return service_config["PUBLIC_BASE_URL"]


def _calls(caplog: pytest.LogCaptureFixture, method: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "services.media.calls" and getattr(record, "method", None) == method
    ]


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    with eventlet.Timeout(timeout, TimeoutError("the condition did not come true in time")):
        while not predicate():
            eventlet.sleep(0.02)


# -- metrics ------------------------------------------------------------------------------


def test_rpc_calls_are_counted_by_method_and_outcome(rpc, base_url):
    data = noisy_png_bytes(20_000)
    before = Scrape(base_url)
    with rpc(user_id="u-1") as media:
        record = media.upload_file(upload_data(data))
        media.findOne(record["id"])
        media.findOne(record["id"])
        with pytest.raises(NotFound):
            media.findOne("no-such-media")
        with pytest.raises(ValidationError):
            media.upload_file(upload_data(b"hello", unknownField=1))
    after = Scrape(base_url)

    assert after.types["media_rpc_calls"] == "counter"
    assert _moved(before, after, "media_rpc_calls_total", method="upload_file", outcome="ok") == 1
    assert (
        _moved(
            before, after, "media_rpc_calls_total", method="upload_file", outcome="ValidationError"
        )
        == 1
    )
    assert _moved(before, after, "media_rpc_calls_total", method="findOne", outcome="ok") == 2
    assert _moved(before, after, "media_rpc_calls_total", method="findOne", outcome="NotFound") == 1
    # Latency: one observation per call, in buckets.
    assert after.types["media_rpc_duration_seconds"] == "histogram"
    assert _moved(before, after, "media_rpc_duration_seconds_count", method="findOne") == 3
    assert _moved(before, after, "media_rpc_duration_seconds_count", method="upload_file") == 2
    assert after.has("media_rpc_duration_seconds_bucket", method="findOne", le="0.005")
    assert (
        _moved(before, after, "media_rpc_duration_seconds_bucket", method="findOne", le="+Inf") == 3
    )
    assert 0 < _moved(before, after, "media_rpc_duration_seconds_sum", method="findOne") < 30
    # Bytes in: both uploads' content as sent, the refused one included.
    assert _moved(before, after, "media_received_bytes_total", via="upload_file") == len(data) + 5


def test_file_endpoint_responses_and_bytes_sent(rpc, base_url):
    data = noisy_png_bytes(300_000)
    with rpc(user_id="u-1") as media:
        record = media.upload_file(upload_data(data, isPublic=True))
    url = f"{base_url}/files/{record['id']}"
    before = Scrape(base_url)
    assert requests.get(url, timeout=30).content == data
    part = requests.get(url, headers={"Range": "bytes=10-1009"}, timeout=30)
    assert part.status_code == 206 and len(part.content) == 1000
    assert requests.head(url, timeout=30).status_code == 200
    assert requests.get(f"{base_url}/files/unknown", timeout=30).status_code == 404
    after = Scrape(base_url)

    def responses(method: str, status: str) -> float:
        return _moved(
            before,
            after,
            "media_http_responses_total",
            route=FILES_ROUTE,
            http_method=method,
            status=status,
        )

    assert responses("GET", "200") == 1
    assert responses("GET", "206") == 1
    assert responses("HEAD", "200") == 1
    assert responses("GET", "404") == 1
    assert _moved(before, after, "media_http_duration_seconds_count", route=FILES_ROUTE) == 4
    # The bodies actually sent: the whole file and the range; HEAD and 404 send no file bytes.
    assert _moved(before, after, "media_sent_bytes_total") == len(data) + 1000
    # The scrape before this one is counted too.
    assert (
        _moved(
            before,
            after,
            "media_http_responses_total",
            route="/metrics",
            http_method="GET",
            status="200",
        )
        == 1
    )


def test_tus_and_rpc_parts_count_bytes_in(rpc, base_url):
    body = noisy_png_bytes(3000)
    size = len(body)
    with rpc(user_id="u-1") as media:
        by_tus = media.initiateUpload({"originalName": "a.png", "userId": "u-1", "size": size})
        by_rpc = media.initiateUpload({"originalName": "b.png", "userId": "u-1", "size": size})
    before = Scrape(base_url)
    response = requests.patch(
        by_tus["uploadUrl"],
        data=body,
        headers={
            "Tus-Resumable": "1.0.0",
            "Authorization": f"Bearer {by_tus['uploadToken']}",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )
    assert response.status_code == 204, response.text
    with rpc(user_id="u-1") as media:
        media.uploadPart(by_rpc["uploadId"], 0, b64(body))
    after = Scrape(base_url)
    assert _moved(before, after, "media_received_bytes_total", via="tus") == size
    assert _moved(before, after, "media_received_bytes_total", via="uploadPart") == size
    assert (
        _moved(
            before,
            after,
            "media_http_responses_total",
            route=UPLOAD_ROUTE,
            http_method="PATCH",
            status="204",
        )
        == 1
    )


@pytest.fixture
def still_service(runner_factory, service_config):
    """The service with its processing and relay timers far apart: what waits stays waiting."""
    from services.media.service import MediaService

    service_config["MEDIA"]["processing_interval_seconds"] = 3600
    service_config["MEDIA"]["outbox_interval_seconds"] = 3600
    runner = runner_factory(service_config, MediaService)
    runner.start()
    return runner


def test_database_gauges_are_read_at_scrape_time(still_service, connect, base_url, sessions):
    with connect(user_id="u-1") as media:
        media.upload_file(upload_data(noisy_png_bytes(5000)))
        media.upload_file(upload_data(noisy_png_bytes(6000)))
        media.initiateUpload({"originalName": "a.bin", "userId": "u-1", "size": 100})
        media.initiateUpload({"originalName": "b.bin", "userId": "u-1", "size": 100})
        started = media.initiateUpload({"originalName": "c.bin", "userId": "u-1", "size": 100})
        media.cancelUpload(started["uploadId"])
    # An event its worker could not publish (the relay is far off): written as the catalog does.
    with sessions.begin() as session:
        record_event(session, "media_updated", media={"id": "x"})
    eventlet.sleep(0.3)
    scrape = Scrape(base_url)
    assert scrape.types["media_upload_sessions"] == "gauge"
    assert scrape.value("media_upload_sessions", state="PENDING") == 2
    assert scrape.value("media_upload_sessions", state="CANCELLED") == 1
    assert scrape.has("media_upload_sessions", state="EXPIRED")  # zero, but there
    assert scrape.value("media_upload_sessions", state="EXPIRED") == 0
    assert scrape.value("media_processing_queue_jobs") == 2
    assert 0.3 <= scrape.value("media_processing_oldest_job_age_seconds") < 30
    assert scrape.value("media_outbox_pending_events") == 1
    assert 0.3 <= scrape.value("media_outbox_oldest_pending_age_seconds") < 30
    for name in (
        "media_upload_sessions",
        "media_processing_queue_jobs",
        "media_processing_oldest_job_age_seconds",
        "media_outbox_pending_events",
        "media_outbox_oldest_pending_age_seconds",
    ):
        assert scrape.types[name] == "gauge"


def test_a_database_failure_during_a_scrape_leaves_the_rest(rpc, base_url, monkeypatch):
    with rpc(user_id="u-1") as media:
        with pytest.raises(NotFound):
            media.findOne("no-such-media")
    before = Scrape(base_url)

    def unreachable(sessions: Any) -> Any:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(operations, "outbox_backlog", unreachable)
    during = Scrape(base_url)
    assert during.value("media_metrics_scrape_errors_total") == (
        before.value("media_metrics_scrape_errors_total") + 1
    )
    # The counters are there, and the gauge read before the failure too.
    assert during.value("media_rpc_calls_total", method="findOne", outcome="NotFound") >= 1
    assert during.has("media_processing_queue_jobs")
    assert not during.has("media_outbox_pending_events")
    assert not during.has("media_upload_sessions", state="PENDING")
    monkeypatch.undo()
    assert Scrape(base_url).has("media_outbox_pending_events")


def test_metrics_endpoint_answers_prometheus_text(rpc, base_url):
    response = requests.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "# TYPE media_processing_failures_total counter" in response.text


# -- logs ---------------------------------------------------------------------------------


def test_a_refused_request_logs_one_info_line_and_no_traceback(rpc, caplog, capsys):
    caplog.set_level(logging.INFO)
    with rpc(user_id="u-7") as media:
        with pytest.raises(NotFound):
            media.findOne("no-such-media")
    _wait_for(lambda: _calls(caplog, "findOne"))
    (line,) = _calls(caplog, "findOne")
    assert line.levelno == logging.INFO
    assert line.outcome == "NotFound"
    assert line.kind == "rpc"
    assert line.caller == "u-7"
    assert line.media_id == "no-such-media"
    assert line.call_id.startswith("media.findOne.")
    assert "no-such-media" in line.error
    assert line.exc_info is None
    message = line.getMessage()
    assert message.startswith("rpc findOne NotFound in ") and line.error in message
    # nameko's own WARNING with the traceback is gone, and nothing else carries a traceback.
    assert not [r for r in caplog.records if r.name == "nameko.containers" and r.levelno >= 30]
    assert not [r for r in caplog.records if r.exc_info]
    err = capsys.readouterr().err
    written = [text for text in err.splitlines() if "findOne NotFound" in text]
    assert len(written) == 1
    assert f"call_id={line.call_id}" in written[0] and "caller=u-7" in written[0]
    assert "Traceback" not in err


def test_a_real_bug_keeps_its_traceback(rpc, caplog, monkeypatch):
    caplog.set_level(logging.INFO)

    def broken(self: Any, caller: Any, media_id: str) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(MediaCatalog, "find_one", broken)
    with rpc(user_id="u-1") as media:
        with pytest.raises(RemoteError) as raised:
            media.findOne("some-id")
    assert raised.value.exc_type == "RuntimeError"
    _wait_for(lambda: _calls(caplog, "findOne"))
    (line,) = _calls(caplog, "findOne")
    assert line.levelno == logging.ERROR and line.outcome == "RuntimeError"
    (report,) = [r for r in caplog.records if r.name == "nameko.containers" and r.exc_info]
    assert report.levelno == logging.ERROR
    assert report.exc_info[0] is RuntimeError


def test_successful_calls_http_requests_and_timer_runs_log_one_line_each(rpc, caplog, base_url):
    caplog.set_level(logging.INFO)
    with rpc(user_id="u-1") as media:
        record = media.upload_file(upload_data(noisy_png_bytes(5000), isPublic=True))
        media.findOne(record["id"])
    requests.get(f"{base_url}/files/{record['id']}", timeout=10)
    _wait_for(lambda: _calls(caplog, "download_file") and _calls(caplog, "relay_outbox"))

    (upload,) = _calls(caplog, "upload_file")
    assert upload.outcome == "ok" and upload.media_id == record["id"]
    assert upload.levelno == logging.INFO and upload.duration_ms > 0
    (found,) = _calls(caplog, "findOne")
    assert found.media_id == record["id"] and found.caller == "u-1"
    (download,) = _calls(caplog, "download_file")
    assert download.kind == "http" and download.status == 200 and download.http_method == "GET"
    assert download.route == FILES_ROUTE and download.media_id == record["id"]
    assert download.getMessage().startswith(f"download_file GET {FILES_ROUTE} 200 in ")
    timer = _calls(caplog, "relay_outbox")[0]
    assert timer.kind == "timer" and timer.outcome == "ok" and timer.caller is None


@pytest.fixture
def json_service(runner_factory, service_config):
    from services.media.service import MediaService

    service_config["LOG_FORMAT"] = "json"
    runner = runner_factory(service_config, MediaService)
    runner.start()
    return runner


def test_json_lines_parse_and_carry_the_fields(json_service, connect, base_url, capsys):
    with connect(user_id="u-3") as media:
        record = media.upload_file(upload_data(noisy_png_bytes(5000), user_id="u-3", isPublic=True))
        with pytest.raises(NotFound):
            media.findOne("no-such-media")
    requests.get(f"{base_url}/files/{record['id']}", timeout=10)
    eventlet.sleep(0.5)  # timer runs (0.2 s apart) log their line too

    lines = []
    for text in capsys.readouterr().err.splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    assert lines
    calls = [line for line in lines if line["logger"] == "services.media.calls"]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for line in calls:
        by_method.setdefault(line["method"], []).append(line)

    (refused,) = by_method["findOne"]
    assert refused["level"] == "INFO" and refused["outcome"] == "NotFound"
    assert refused["caller"] == "u-3" and refused["media_id"] == "no-such-media"
    assert refused["call_id"].startswith("media.findOne.")
    assert "exc_info" not in refused
    assert refused["timestamp"].endswith("Z")
    assert list(refused)[:4] == ["timestamp", "level", "logger", "message"]
    assert isinstance(refused["duration_ms"], float)
    (upload,) = by_method["upload_file"]
    assert upload["outcome"] == "ok" and upload["media_id"] == record["id"]
    (download,) = by_method["download_file"]
    assert download["status"] == 200 and download["route"] == FILES_ROUTE
    assert by_method["relay_outbox"][0]["kind"] == "timer"
    for line in calls:
        assert {"timestamp", "level", "logger", "message", "call_id", "method"} <= set(line)
        assert {"caller", "media_id", "duration_ms", "outcome"} <= set(line)


# -- under nameko run ---------------------------------------------------------------------


def test_nameko_run_writes_each_line_once_in_json(
    rabbit_config, database_url, tmp_path, connect, sessions
):
    port = free_port()
    env = dict(
        os.environ,
        AMQP_URI=rabbit_config["AMQP_URI"],
        DATABASE_URL=database_url,
        STORAGE_ROOT=str(tmp_path / "storage"),
        URL_SIGNING_KEY=SIGNING_KEY,
        WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    log_file = tmp_path / "stderr.log"
    with open(log_file, "wb") as stderr:
        process = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "nameko"),
                "run",
                "--config",
                "config.yml",
                "services.media",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.1)
        with connect(user_id="u-9") as media:
            with pytest.raises(NotFound):
                media.findOne("no-such-media")
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    written = log_file.read_text().splitlines()
    refused = [text for text in written if "no-such-media" in text]
    assert len(refused) == 1, written
    line = json.loads(refused[0])
    assert line["level"] == "INFO" and line["outcome"] == "NotFound" and line["caller"] == "u-9"
    assert "Traceback" not in log_file.read_text()
    # Once the container started, every line is JSON: basicConfig's handler was replaced.
    started = next(i for i, text in enumerate(written) if text.startswith("{"))
    assert all(text.startswith("{") for text in written[started:]), written[started:]
