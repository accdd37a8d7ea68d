"""``media-admin`` against real databases (SQLite and PostgreSQL) and real local storage.

Most tests run ``main(argv)`` in-process with a config file written for the test database; one
runs the installed console script; one starts the service and regenerates variants over RPC.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from services.media.catalog.records import MediaCatalog
from services.media.core.database import make_engine
from services.media.core.ids import utcnow
from services.media.core.models import Media, MediaVariant, OutboxEvent
from services.media.operations.admin import DEFAULT_CONFIG, main
from services.media.processing.jobs import MediaProcessor
from storage import LocalStorage, new_key
from tests.conftest import SIGNING_KEY, fresh_database, load_config
from tests.files import png_bytes, upload_data
from tests.unit.operations.test_views import add_event, add_media, add_upload

NOTES = b"lecture notes\n"
SCRIPT = Path(sys.executable).parent / "media-admin"


def write_config(path: Path, database_url: str, storage_root: Path, **overrides: Any) -> Path:
    """The service's config.yml, resolved, pointing at the test database and storage."""
    config = load_config(URL_SIGNING_KEY=SIGNING_KEY)
    config["DB_URIS"] = {"media:Base": database_url}
    config["STORAGE_ROOT"] = str(storage_root)
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def config_file(tmp_path: Path, database_url: str, storage_root: Path, storage) -> Path:
    # ``storage`` first: the test's LocalStorage and the CLI's share the root.
    return write_config(tmp_path / "config.yml", database_url, storage_root)


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def admin(capsys: pytest.CaptureFixture[str], config_file: Path):
    """``admin("jobs", "--json")``: runs the CLI in-process on the test's config."""

    def run(*argv: str, config: Path | None = None) -> Ran:
        capsys.readouterr()
        code = main([*argv, "--config", str(config or config_file)])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def pending_events(sessions) -> list[tuple[str, dict[str, Any]]]:
    with sessions() as session:
        rows = session.execute(
            select(OutboxEvent.event_type, OutboxEvent.payload)
            .where(OutboxEvent.published_at.is_(None))
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
        ).all()
    return [(event_type, payload) for event_type, payload in rows]


def status_of(sessions, media_id: str) -> str | None:
    with sessions() as session:
        return session.scalar(select(Media.status).where(Media.id == media_id))


def _age_file(storage_root: Path, key: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(storage_root / key, (then, then))


def stored_png(storage: LocalStorage, **image: Any) -> str:
    key = new_key()
    storage.put(key, [png_bytes(**image)], "image/png")
    return key


# -- outbox status ----------------------------------------------------------------------------


def test_the_default_config_is_the_repositorys_config_yml():
    assert DEFAULT_CONFIG == Path(__file__).resolve().parents[3] / "config.yml"
    assert DEFAULT_CONFIG.is_file()


def test_outbox_status_reports_pending_events_by_type(admin, sessions):
    add_event(sessions, "media_created", age=40)
    add_event(sessions, "media_created", age=5)
    add_event(sessions, "media_removed", age=10)
    add_event(sessions, "media_created", age=4000, published=True)

    ran = admin("outbox", "status", "--json")

    assert (ran.code, ran.err) == (0, "")
    report = ran.json
    assert report["pending"] == 3
    assert 40 <= report["oldestPendingAgeSeconds"] < 70
    assert report["byType"] == {"media_created": 2, "media_removed": 1}

    table = admin("outbox", "status")
    assert table.code == 0
    assert "3 events pending" in table.out
    assert "media_removed" in table.out


def test_outbox_status_with_nothing_pending(admin):
    ran = admin("outbox", "status", "--json")
    assert ran.code == 0
    assert ran.json == {"pending": 0, "oldestPendingAgeSeconds": None, "byType": {}}


# -- jobs -------------------------------------------------------------------------------------


def test_jobs_lists_processing_media_and_upload_sessions_oldest_first(admin, sessions):
    lease = utcnow() + timedelta(minutes=10)
    newer = add_media(sessions, status="PROCESSING", age=30)
    older = add_media(
        sessions, status="PROCESSING", age=900, processing_attempts=3, processing_lease_until=lease
    )
    add_media(sessions, status="READY", age=5000)
    waiting = add_upload(sessions, "UPLOADING", age=60, idle=20)
    first = add_upload(sessions, "PENDING", age=3600, idle=3600)
    add_upload(sessions, "CANCELLED", age=7200)

    ran = admin("jobs", "--json")

    assert (ran.code, ran.err) == (0, "")
    processing = ran.json["processing"]
    assert processing["count"] == 2
    assert 900 <= processing["oldestAgeSeconds"] < 960
    assert [job["id"] for job in processing["jobs"]] == [older, newer]
    job = processing["jobs"][0]
    assert (job["attempts"], job["leased"], job["type"]) == (3, True, "IMAGE")
    assert job["leaseUntil"].startswith(lease.isoformat()[:19])
    assert job["leaseUntil"].endswith("Z")
    uploads = ran.json["uploads"]
    assert uploads["byState"] == {
        "PENDING": 1,
        "UPLOADING": 1,
        "VERIFYING": 0,
        "READY": 0,
        "FAILED": 0,
        "CANCELLED": 1,
        "EXPIRED": 0,
    }
    assert [row["id"] for row in uploads["sessions"]] == [first, waiting]
    assert 20 <= uploads["sessions"][1]["idleSeconds"] < 80

    limited = admin("jobs", "--json", "--limit", "1")
    assert [job["id"] for job in limited.json["processing"]["jobs"]] == [older]
    assert limited.json["processing"]["count"] == 2  # the count is not limited

    table = admin("jobs")
    assert table.code == 0
    assert older in table.out and first in table.out
    assert "processing: 2 media" in table.out


# -- reconcile --------------------------------------------------------------------------------


@pytest.fixture
def drift(service, storage, storage_root, sessions) -> dict[str, Any]:
    """Storage and database out of step both ways, plus what must be left alone."""
    owned = service.upload_file(upload_data(NOTES, name="notes.txt"))["id"]
    lost = service.upload_file(upload_data(NOTES + b"lost\n", name="lost.txt"))["id"]
    with sessions.begin() as session:
        session.execute(update(Media).values(created_at=utcnow() - timedelta(hours=2)))
        lost_key = session.get(Media, lost).storage_key
    storage.delete(lost_key)
    orphan = stored_png(storage)
    fresh = stored_png(storage, color="blue")  # an upload whose record is about to commit
    foreign = "imports/2026/not-ours.bin"
    storage.put(foreign, [b"x"], "application/octet-stream")
    for info in list(storage.iter_objects()):
        if info.key != fresh:
            _age_file(storage_root, info.key, 2 * 3600)
    return {"owned": owned, "lost": lost, "orphan": orphan, "fresh": fresh, "foreign": foreign}


def object_keys(storage: LocalStorage) -> set[str]:
    return {info.key for info in storage.iter_objects()}


def test_reconcile_dry_run_reports_both_ways_and_changes_nothing(admin, drift, storage, sessions):
    before = object_keys(storage)

    ran = admin("reconcile", "--dry-run", "--json")

    assert (ran.code, ran.err) == (0, "")
    assert ran.json == {
        "dryRun": True,
        "orphanGraceSeconds": 3600.0,
        "orphanedObjects": {"count": 1, "keys": [drift["orphan"]]},
        "missingBytes": {"count": 1, "mediaIds": [drift["lost"]]},
    }
    assert object_keys(storage) == before
    assert status_of(sessions, drift["lost"]) == "READY"
    assert pending_events(sessions) == []

    table = admin("reconcile", "--dry-run")
    assert table.code == 0
    assert "dry run" in table.out
    assert drift["orphan"] in table.out and drift["lost"] in table.out
    assert object_keys(storage) == before


def test_reconcile_deletes_orphans_and_marks_lost_bytes_failed(admin, drift, storage, sessions):
    ran = admin("reconcile", "--json")

    assert ran.code == 0
    assert f"deleted orphaned object {drift['orphan']}" in ran.err  # the sweeper's own warning
    assert ran.json["dryRun"] is False
    assert ran.json["orphanedObjects"] == {"count": 1, "keys": [drift["orphan"]]}
    assert ran.json["missingBytes"] == {"count": 1, "mediaIds": [drift["lost"]]}
    keys = object_keys(storage)
    assert drift["orphan"] not in keys
    assert {drift["fresh"], drift["foreign"]} <= keys
    assert status_of(sessions, drift["lost"]) == "FAILED"
    assert status_of(sessions, drift["owned"]) == "READY"
    # The event goes through the outbox, for the service's relay to publish.
    events = pending_events(sessions)
    assert [(event_type, payload["changes"]) for event_type, payload in events] == [
        ("media_updated", ["status"])
    ]
    assert events[0][1]["media"]["id"] == drift["lost"]
    assert events[0][1]["media"]["status"] == "FAILED"

    again = admin("reconcile", "--json")
    assert again.json["orphanedObjects"]["count"] == 0
    assert again.json["missingBytes"]["count"] == 0
    assert len(pending_events(sessions)) == 1


# -- purge ------------------------------------------------------------------------------------


@pytest.fixture
def expired(service, sessions, settings) -> dict[str, str]:
    old = service.upload_file(upload_data(NOTES, name="old.txt"))["id"]
    recent = service.upload_file(upload_data(NOTES + b"2\n", name="recent.txt"))["id"]
    live = service.upload_file(upload_data(NOTES + b"3\n", name="live.txt"))["id"]
    service.remove(old)
    service.remove(recent)
    with sessions.begin() as session:
        session.execute(
            update(Media)
            .where(Media.id == old)
            .values(deleted_at=utcnow() - settings.retention - timedelta(hours=1))
        )
    return {"old": old, "recent": recent, "live": live}


def media_ids(sessions) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(Media.id)))


def test_purge_dry_run_lists_what_the_purge_would_remove_and_changes_nothing(
    admin, expired, sessions, storage
):
    before_keys = object_keys(storage)

    ran = admin("purge", "--dry-run", "--json")

    assert (ran.code, ran.err) == (0, "")
    report = ran.json
    assert (report["dryRun"], report["count"], report["more"]) == (True, 1, False)
    assert report["retentionDays"] == 30
    assert [item["id"] for item in report["media"]] == [expired["old"]]
    assert report["bytes"] == len(NOTES) == report["media"][0]["size"]
    assert report["media"][0]["deletedAt"].endswith("Z")
    assert media_ids(sessions) == set(expired.values())
    assert object_keys(storage) == before_keys
    assert pending_events(sessions) == []

    table = admin("purge", "--dry-run")
    assert table.code == 0
    assert expired["old"] in table.out
    assert expired["recent"] not in table.out


def test_purge_removes_media_past_retention(admin, expired, sessions, storage):
    ran = admin("purge", "--json")

    assert ran.code == 0
    assert ran.json == {"dryRun": False, "retentionDays": 30.0, "purged": 1}
    assert "purged 0 media" in admin("purge").out  # with its progress display, on stderr
    assert media_ids(sessions) == {expired["recent"], expired["live"]}
    assert len(object_keys(storage)) == 2
    assert [event_type for event_type, _ in pending_events(sessions)] == ["media_purged"]
    assert admin("purge", "--dry-run", "--json").json["count"] == 0


def test_purge_dry_run_says_when_there_is_more_than_it_lists(admin, sessions, settings):
    gone = utcnow() - settings.retention - timedelta(days=1)
    for hours in (3, 2, 1):
        add_media(
            sessions,
            status="DELETED",
            age=99999,
            deleted_at=gone - timedelta(hours=hours),
            storage_key=new_key(),
        )

    ran = admin("purge", "--dry-run", "--json", "--limit", "2")

    assert (ran.json["count"], ran.json["more"]) == (2, True)
    deleted = [item["deletedAt"] for item in ran.json["media"]]
    assert deleted == sorted(deleted)  # the longest deleted first, as the purge takes them


# -- retry ------------------------------------------------------------------------------------


def failed_image(sessions, storage, **fields: Any) -> str:
    return add_media(
        sessions,
        status="FAILED",
        age=600,
        storage_key=stored_png(storage, width=40, height=30),
        processing_attempts=5,
        processing_error="processing failed 5 times; last: tool crashed",
        **fields,
    )


def test_retry_puts_a_failed_media_back_to_processing_and_processing_runs_again(
    admin, sessions, storage, catalog: MediaCatalog
):
    media_id = failed_image(sessions, storage)

    ran = admin("retry", media_id, "--json")

    assert (ran.code, ran.err) == (0, "")
    assert ran.json["id"] == media_id
    assert ran.json["status"] == "PROCESSING"
    assert ran.json["changes"] == ["status", "processingError"]
    with sessions() as session:
        media = session.get(Media, media_id)
        assert (media.status, media.processing_attempts, media.processing_error) == (
            "PROCESSING",
            0,
            None,
        )
    events = pending_events(sessions)
    assert [(event_type, payload["changes"]) for event_type, payload in events] == [
        ("media_updated", ["status", "processingError"])
    ]
    assert events[0][1]["media"]["status"] == "PROCESSING"
    assert events[0][1]["media"]["processingError"] is None

    assert MediaProcessor(catalog).run_pending() == 1
    assert status_of(sessions, media_id) == "READY"


def test_retry_refuses_a_media_that_is_not_failed(admin, sessions, storage):
    media_id = add_media(sessions, status="READY", storage_key=stored_png(storage))

    ran = admin("retry", media_id)

    assert ran.code == 2
    assert ran.out == ""
    assert (
        ran.err
        == f"media-admin: refused: media {media_id} is READY, not FAILED: nothing to retry\n"
    )
    assert status_of(sessions, media_id) == "READY"
    assert pending_events(sessions) == []


def test_retry_refuses_an_unknown_id(admin, sessions):
    ran = admin("retry", "0190aaaa-0000-7000-8000-000000000000", "--json")

    assert ran.code == 2
    assert ran.out == ""
    assert "no media with id '0190aaaa-0000-7000-8000-000000000000'" in ran.err
    assert len(ran.err.splitlines()) == 1


def test_retry_refuses_a_failed_media_whose_bytes_are_gone(admin, sessions, storage):
    media_id = failed_image(sessions, storage)
    with sessions() as session:
        storage.delete(session.get(Media, media_id).storage_key)

    ran = admin("retry", media_id)

    assert ran.code == 2
    assert "has no bytes" in ran.err
    assert status_of(sessions, media_id) == "FAILED"
    assert pending_events(sessions) == []


def test_retry_refuses_a_media_without_stored_bytes(admin, sessions):
    media_id = add_media(sessions, status="FAILED", external_url="https://example.com/a.png")

    ran = admin("retry", media_id)

    assert ran.code == 2
    assert "no stored bytes" in ran.err


# -- failures and usage -----------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def closed_port_url() -> str:
    return f"postgresql://media@127.0.0.1:{unused_port()}/media?connect_timeout=2"


@pytest.mark.parametrize("command", [["jobs"], ["outbox", "status"], ["reconcile"], ["purge"]])
def test_an_unreachable_database_is_one_line_and_exit_code_1(
    admin, tmp_path, storage_root, command
):
    config = write_config(tmp_path / "down.yml", closed_port_url(), storage_root)

    ran = admin(*command, "--json", config=config)

    assert ran.code == 1
    assert ran.out == ""
    assert ran.err.startswith("media-admin: database unavailable: ")
    assert "Connection refused" in ran.err or "connect" in ran.err
    assert len(ran.err.splitlines()) == 1


def test_a_missing_sqlite_database_is_not_created(admin, tmp_path, storage_root):
    missing = tmp_path / "nowhere" / "media.db"
    config = write_config(tmp_path / "missing.yml", f"sqlite:///{missing}", storage_root)

    ran = admin("jobs", config=config)

    assert ran.code == 1
    assert ran.err == f"media-admin: database unavailable: no SQLite database at '{missing}'\n"
    assert not missing.exists()


def test_usage_errors_exit_2(admin, capsys, tmp_path):
    capsys.readouterr()
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    assert main(["retry"]) == 2
    assert main(["jobs", "--limit", "0"]) == 2
    assert main(["regenerate-variants", "--limit", "1001"]) == 2
    capsys.readouterr()
    assert main(["--help"]) == 0
    assert "reconcile" in capsys.readouterr().out

    ran = admin("jobs", config=tmp_path / "absent.yml")
    assert ran.code == 2
    assert ran.err == f"media-admin: refused: config file '{tmp_path / 'absent.yml'}' not found\n"


def test_a_broken_configuration_is_exit_code_1(admin, tmp_path, database_url, storage_root):
    garbage = tmp_path / "garbage.yml"
    garbage.write_bytes(b"\xfb\xfc not yaml")
    ran = admin("jobs", config=garbage)
    assert ran.code == 1
    assert ran.err.startswith(f"media-admin: cannot read config file '{garbage}'")
    assert len(ran.err.splitlines()) == 1

    keyless = write_config(tmp_path / "keyless.yml", database_url, storage_root)
    config = yaml.safe_load(keyless.read_text())
    config.update(URL_SIGNING_KEY=None, MEDIA_DEV_MODE=False)
    keyless.write_text(yaml.safe_dump(config))
    ran = admin("reconcile", "--dry-run", config=keyless)
    assert ran.code == 1
    assert ran.err.startswith("media-admin: configuration: URL_SIGNING_KEY is not set.")


def test_the_config_is_resolved_from_the_environment_like_nameko_run(
    capsys, tmp_path, database_url, sessions, monkeypatch
):
    add_event(sessions, "media_created")
    config = tmp_path / "env.yml"
    config.write_text(
        'DB_URIS:\n  "media:Base": ${MEDIA_ADMIN_TEST_DB:sqlite:///nowhere.db}\n'
        "STORAGE_ROOT: ${MEDIA_ADMIN_TEST_ROOT:./var/storage}\n"
    )
    monkeypatch.setenv("MEDIA_ADMIN_TEST_DB", database_url)

    capsys.readouterr()
    assert main(["outbox", "status", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == 1


# -- the installed console script -------------------------------------------------------------


def test_the_console_script_prints_only_json(tmp_path):
    assert SCRIPT.is_file(), "media-admin is not installed: pip install -e ."
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "STORAGE_"))}
    with fresh_database("sqlite", tmp_path) as url:
        engine = make_engine(url)
        sessions = sessionmaker(bind=engine, expire_on_commit=False)
        add_event(sessions, "media_created", age=12)
        add_upload(sessions, "UPLOADING", age=30)
        engine.dispose()
        config = write_config(tmp_path / "config.yml", url, tmp_path / "storage")

        outbox = subprocess.run(
            [str(SCRIPT), "outbox", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert (outbox.returncode, outbox.stderr) == (0, "")
        report = json.loads(outbox.stdout)
        assert report["pending"] == 1 and report["byType"] == {"media_created": 1}
        assert report["oldestPendingAgeSeconds"] >= 12

        jobs = subprocess.run(
            [str(SCRIPT), "jobs", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert jobs.returncode == 0
        assert json.loads(jobs.stdout)["uploads"]["byState"]["UPLOADING"] == 1

        refused = subprocess.run(
            [str(SCRIPT), "retry", "no-such-id", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert (refused.returncode, refused.stdout) == (2, "")
        assert refused.stderr == "media-admin: refused: no media with id 'no-such-id'\n"


# -- regenerate-variants, over RPC to the running service -------------------------------------


@pytest.fixture
def running_service(runner_factory, rabbit_config, database_url, sessions, storage_root):
    from services.media.service import MediaService

    config = load_config(URL_SIGNING_KEY=SIGNING_KEY)
    config["AMQP_URI"] = rabbit_config["AMQP_URI"]
    config["DB_URIS"] = {"media:Base": database_url}
    config["STORAGE_ROOT"] = str(storage_root)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{probe.getsockname()[1]}"
    config["MEDIA"]["outbox_interval_seconds"] = 0.2
    runner = runner_factory(config, MediaService)
    runner.start()
    return config


def variant_names(sessions, media_id: str) -> set[str]:
    with sessions() as session:
        return set(
            session.scalars(select(MediaVariant.name).where(MediaVariant.media_id == media_id))
        )


@pytest.mark.integration
def test_regenerate_variants_calls_the_service_until_nothing_is_left(
    running_service, admin, tmp_path, sessions, storage, storage_root, settings
):
    images = [
        add_media(sessions, status="READY", storage_key=stored_png(storage, width=300, height=200))
        for _ in range(3)
    ]
    add_media(sessions, status="READY", mime_type="text/plain", media_type="DOCUMENT")
    config = write_config(
        tmp_path / "rpc.yml",
        running_service["DB_URIS"]["media:Base"],
        storage_root,
        AMQP_URI=running_service["AMQP_URI"],
    )

    ran = admin("regenerate-variants", "--limit", "2", "--json", config=config)

    # stderr also carries the in-process service's own logs here.
    assert ran.code == 0, ran.err
    assert "media-admin:" not in ran.err
    assert ran.json == {"regenerated": 3, "calls": 2, "batch": 2}
    presets = {recipe.name for recipe in settings.variant_recipes}
    for media_id in images:
        assert variant_names(sessions, media_id) == presets

    again = admin("regenerate-variants", config=config)
    assert again.code == 0
    assert "regenerated the variants of 0 media in 1 calls" in again.out
    assert "regenerating variants" in again.err  # the progress display

    with sessions() as session:
        updated = session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.event_type == "media_updated")
        )
    assert updated == 3


def test_regenerate_variants_without_a_broker_is_exit_code_1(admin, tmp_path, storage_root):
    config = write_config(
        tmp_path / "nobroker.yml",
        "sqlite:///unused.db",
        storage_root,
        AMQP_URI=f"amqp://guest:guest@127.0.0.1:{unused_port()}/",
    )

    ran = admin("regenerate-variants", "--json", config=config)

    assert ran.code == 1
    assert ran.out == ""
    assert ran.err.startswith("media-admin: broker unavailable: ")
    assert len(ran.err.splitlines()) == 1


@pytest.mark.integration
def test_regenerate_variants_with_no_service_running_is_exit_code_1(
    admin, tmp_path, storage_root, rabbit_config
):
    config = write_config(
        tmp_path / "noservice.yml",
        "sqlite:///unused.db",
        storage_root,
        AMQP_URI=rabbit_config["AMQP_URI"],
    )

    ran = admin("regenerate-variants", "--json", "--timeout", "5", config=config)

    assert ran.code == 1
    assert ran.out == ""
    # (stderr may also carry the amqp library's own warnings, logged in this process)
    assert ran.err.splitlines()[-1] == (
        "media-admin: no media service is running: nothing consumes its RPC queue"
    )
