"""``media-admin``: the operator's command line, over the service's own database and storage.

It reads the service's config the way ``nameko run`` does and works on the database and the
storage directly, through the same catalog the service uses. Changes go through the catalog's
units of work, so their events land in the transactional outbox and the running service's relay
publishes them: no broker is needed for those. Only ``regenerate-variants`` calls the service
over RPC (the rendering belongs to the service), as an admin.

Exit codes: 0 done, 1 operational failure (database, storage or broker unreachable, bad
configuration), 2 usage error or refused request.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from services.media.catalog.hygiene import Hygiene
from services.media.catalog.records import MediaCatalog, needs_processing, next_updated_at
from services.media.core.database import make_engine
from services.media.core.identity import ADMIN_ROLE
from services.media.core.ids import isoformat_z
from services.media.core.models import Media
from services.media.core.settings import ConfigurationError, MediaSettings
from services.media.core.vocabulary import MediaEvent, MediaStatus
from services.media.operations import views as operations
from storage import Storage, StorageError, build_storage

PROG = "media-admin"
DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "config.yml"
DATABASE_KEY = "media:Base"
# Who the RPC calls act for: an admin, named so that the service's logs say where calls came from.
ADMIN_USER = "media-admin"
# How many objects or ids the tables show before they say "and N more".
SHOWN = 20

OK, FAILURE, REFUSED = 0, 1, 2
# Whose warnings are shown on stderr.
LOGGERS = ("services", "storage")

log = logging.getLogger(__name__)


class Refused(Exception):
    """The request is understood and declined (exit code 2)."""


class Failure(Exception):
    """Something the command needs is unavailable or misconfigured (exit code 1)."""


# -- set-up ---------------------------------------------------------------------------------


def load_config(path: Path) -> dict[str, Any]:
    """The YAML config with ``${VAR:default}`` resolved from the environment, as ``nameko run``
    resolves it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nameko's CLI imports pkg_resources, which warns
        from nameko.cli.main import setup_yaml_parser
    setup_yaml_parser()
    try:
        with open(path) as handle:
            config = yaml.safe_load(handle)
    except FileNotFoundError:
        raise Refused(f"config file {str(path)!r} not found") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise Failure(f"cannot read config file {str(path)!r}: {_one_line(exc)}") from None
    if not isinstance(config, dict):
        raise Failure(f"config file {str(path)!r} is not a mapping")
    return config


@dataclass
class Context:
    """What the commands work with, each piece built when first asked for."""

    config: dict[str, Any]
    _engine: Engine | None = None
    _sessions: sessionmaker | None = None
    _catalog: MediaCatalog | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        try:
            return str(self.config["DB_URIS"][DATABASE_KEY])
        except (KeyError, TypeError):
            raise Failure(f"the config has no DB_URIS[{DATABASE_KEY!r}]") from None

    @property
    def sessions(self) -> sessionmaker:
        if self._sessions is None:
            url = self.database_url
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                database = parsed.database
                # SQLite would make an empty database where the service's is missing.
                if database and database != ":memory:" and not Path(database).is_file():
                    raise Failure(f"database unavailable: no SQLite database at {database!r}")
            self._engine = make_engine(url)
            self.cleanups.append(self._engine.dispose)
            self._sessions = sessionmaker(bind=self._engine, expire_on_commit=False)
        return self._sessions

    @property
    def catalog(self) -> MediaCatalog:
        if self._catalog is None:
            sessions = self.sessions
            try:
                settings = MediaSettings.from_config(self.config)
                storage: Storage = build_storage(self.config)
            except (ConfigurationError, ValueError) as exc:
                raise Failure(f"configuration: {exc}") from None
            self._catalog = MediaCatalog(sessions=sessions, storage=storage, settings=settings)
        return self._catalog

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            cleanup()


# -- output ---------------------------------------------------------------------------------


class Output:
    """JSON on stdout with ``--json``; otherwise rich tables on stdout and progress on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
        if not self.console.is_terminal:
            self.console = Console(file=sys.stdout, highlight=False, width=160)
        self.errors = Console(file=sys.stderr, highlight=False)

    def result(self, data: dict[str, Any], show: Callable[[Console], None]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
            sys.stdout.flush()
        else:
            show(self.console)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr (none with ``--json``); yields ``advance(count)``."""
        display = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}" + ("/{task.total}" if total is not None else "")),
            TimeElapsedColumn(),
            console=self.errors,
            disable=self.as_json,
            transient=False,
        )
        with display:
            task = display.add_task(description, total=total)
            yield lambda count: display.advance(task, count)


def _table(*columns: str) -> Table:
    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _show(console: Console, title: str, table: Table) -> None:
    console.print(title, style="bold")
    if table.row_count:
        console.print(table)
    else:
        console.print("  (none)")


def _listing(console: Console, title: str, items: list[str]) -> None:
    if not items:
        return
    console.print(title)
    for item in items[:SHOWN]:
        console.print(f"  {item}")
    if len(items) > SHOWN:
        console.print(f"  ... and {len(items) - SHOWN} more (--json lists them all)")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _time(value: datetime | None) -> str | None:
    return isoformat_z(value)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- commands -------------------------------------------------------------------------------


def reconcile(context: Context, args: argparse.Namespace, out: Output) -> int:
    """Storage against the database, both ways, with the sweeper's own logic."""
    catalog = context.catalog
    orphans: list[str] = []
    missing: list[str] = []
    hygiene = Hygiene(catalog)
    hygiene.sweep_orphans(dry_run=args.dry_run, report=orphans)
    hygiene.mark_missing_bytes(dry_run=args.dry_run, report=missing)
    data = {
        "dryRun": args.dry_run,
        "orphanGraceSeconds": catalog.settings.orphan_grace.total_seconds(),
        "orphanedObjects": {"count": len(orphans), "keys": orphans},
        "missingBytes": {"count": len(missing), "mediaIds": missing},
    }

    def show(console: Console) -> None:
        would = "would be " if args.dry_run else ""
        title = "reconcile" + (" (dry run: nothing changed)" if args.dry_run else "")
        table = _table("what", "count")
        table.add_row(f"stored objects no record owns, {would}deleted", str(len(orphans)))
        table.add_row(f"records whose bytes are gone, {would}marked FAILED", str(len(missing)))
        _show(console, title, table)
        _listing(console, "objects:", orphans)
        _listing(console, "media:", missing)

    out.result(data, show)
    return OK


def regenerate_variants(context: Context, args: argparse.Namespace, out: Output) -> int:
    """Calls ``regenerateVariants`` until a call finds less than a full batch."""
    # nameko's RPC stack is loaded only where it is used.
    from kombu.exceptions import OperationalError as BrokerError
    from nameko.exceptions import RemoteError, RpcTimeout, UnknownService

    from services.media.client import MediaError, media_rpc

    if "AMQP_URI" not in context.config:
        raise Failure("the config has no AMQP_URI")
    regenerated = 0
    calls = 0
    try:
        with (
            out.progress("regenerating variants", None) as advance,
            media_rpc(
                context.config, timeout=args.timeout, user_id=ADMIN_USER, roles=[ADMIN_ROLE]
            ) as media,
        ):
            while True:
                done = int(media.regenerateVariants({"limit": args.limit})["regenerated"])
                calls += 1
                regenerated += done
                advance(done)
                if done < args.limit:
                    break
    except MediaError as exc:  # the service answered with an error of its contract
        raise Failure(f"the service answered {type(exc).__name__}: {_one_line(exc)}") from None
    except UnknownService:
        raise Failure("no media service is running: nothing consumes its RPC queue") from None
    except RpcTimeout:
        raise Failure(f"no answer from the media service within {args.timeout:g} s") from None
    except RemoteError as exc:
        raise Failure(f"the service failed: {_one_line(exc)}") from None
    except (OSError, BrokerError) as exc:
        raise Failure(f"broker unavailable: {_one_line(exc)}") from None
    data = {"regenerated": regenerated, "calls": calls, "batch": args.limit}

    def show(console: Console) -> None:
        console.print(f"regenerated the variants of {regenerated} media in {calls} calls")

    out.result(data, show)
    return OK


def purge(context: Context, args: argparse.Namespace, out: Output) -> int:
    """The retention purge, or with ``--dry-run`` what it would remove."""
    catalog = context.catalog
    retention_days = catalog.settings.retention.total_seconds() / 86400
    if args.dry_run:
        with catalog.sessions() as session:
            due = Hygiene(catalog).due_for_purge(session, args.limit + 1)
        more = len(due) > args.limit
        due = due[: args.limit]
        data = {
            "dryRun": True,
            "retentionDays": retention_days,
            "count": len(due),
            "more": more,
            "bytes": sum(int(row.size or 0) for row in due),
            "media": [
                {
                    "id": row.id,
                    "deletedAt": _time(row.deleted_at),
                    "size": int(row.size or 0),
                    "storageKey": row.storage_key,
                }
                for row in due
            ],
        }

        def show_due(console: Console) -> None:
            table = _table("id", "deleted at", "size")
            for item in data["media"]:
                table.add_row(item["id"], item["deletedAt"], str(item["size"]))
            title = f"would be purged (deleted over {retention_days:g} days ago; dry run)"
            _show(console, title, table)
            suffix = f" (the first {args.limit}; there are more)" if more else ""
            console.print(f"{len(due)} media, {data['bytes']} bytes{suffix}")

        out.result(data, show_due)
        return OK

    with catalog.sessions() as session:
        expected = len(Hygiene(catalog).due_for_purge(session, args.limit))
    taken = 0
    # The bar's total is what is due now, if that is fewer than --limit (else it is unknown).
    total = expected if 0 < expected < args.limit else None
    with out.progress("purging", total) as advance:
        while True:
            batch = Hygiene(catalog).purge_expired(limit=args.batch)
            taken += batch
            advance(batch)
            if batch < args.batch:
                break
    data = {"dryRun": False, "retentionDays": retention_days, "purged": taken}

    def show(console: Console) -> None:
        console.print(f"purged {taken} media past the retention period ({retention_days:g} days)")

    out.result(data, show)
    return OK


def outbox_status(context: Context, args: argparse.Namespace, out: Output) -> int:
    sessions = context.sessions
    backlog = operations.outbox_backlog(sessions)
    by_type = operations.outbox_by_type(sessions)
    data = {
        "pending": backlog.count,
        "oldestPendingAgeSeconds": _seconds(backlog.oldest_age_seconds),
        "byType": by_type,
    }

    def show(console: Console) -> None:
        oldest = backlog.oldest_age_seconds
        console.print(
            f"{backlog.count} events pending"
            + (f"; the oldest for {_age(oldest)}" if oldest is not None else "")
        )
        table = _table("event type", "pending")
        for event_type, count in by_type.items():
            table.add_row(event_type, str(count))
        _show(console, "pending by type", table)

    out.result(data, show)
    return OK


def jobs(context: Context, args: argparse.Namespace, out: Output) -> int:
    sessions = context.sessions
    backlog = operations.processing_backlog(sessions)
    processing = operations.processing_jobs(sessions, limit=args.limit)
    states = operations.upload_sessions_by_state(sessions)
    uploads = operations.upload_sessions(sessions, limit=args.limit)
    data = {
        "processing": {
            "count": backlog.count,
            "oldestAgeSeconds": _seconds(backlog.oldest_age_seconds),
            "jobs": [
                {
                    "id": job.media_id,
                    "type": job.type,
                    "mimeType": job.mime_type,
                    "attempts": job.attempts,
                    "leaseUntil": _time(job.lease_until),
                    "leased": job.leased,
                    "createdAt": _time(job.created_at),
                    "ageSeconds": _seconds(job.age_seconds),
                }
                for job in processing
            ],
        },
        "uploads": {
            "byState": states,
            "sessions": [
                {
                    "id": upload.upload_id,
                    "status": upload.status,
                    "userId": upload.user_id,
                    "originalName": upload.original_name,
                    "size": upload.size,
                    "transfer": upload.transfer,
                    "createdAt": _time(upload.created_at),
                    "updatedAt": _time(upload.updated_at),
                    "ageSeconds": _seconds(upload.age_seconds),
                    "idleSeconds": _seconds(upload.idle_seconds),
                }
                for upload in uploads
            ],
        },
    }

    def show(console: Console) -> None:
        table = _table("id", "type", "attempts", "lease until", "age")
        for job in processing:
            lease = _time(job.lease_until) or "-"
            if job.lease_until is not None and not job.leased:
                lease += " (expired)"
            table.add_row(
                job.media_id, job.mime_type, str(job.attempts), lease, _age(job.age_seconds)
            )
        oldest = backlog.oldest_age_seconds
        title = f"processing: {backlog.count} media" + (
            f", the oldest created {_age(oldest)} ago" if oldest is not None else ""
        )
        _show(console, title, table)
        counts = _table(*states)
        counts.add_row(*(str(count) for count in states.values()))
        _show(console, "upload sessions by state", counts)
        table = _table("id", "status", "user", "size", "age", "idle")
        for upload in uploads:
            table.add_row(
                upload.upload_id,
                upload.status,
                upload.user_id,
                str(upload.size),
                _age(upload.age_seconds),
                _age(upload.idle_seconds),
            )
        _show(console, "upload sessions under way, oldest first", table)

    out.result(data, show)
    return OK


def retry(context: Context, args: argparse.Namespace, out: Output) -> int:
    """A FAILED media back to PROCESSING with its attempts reset, in one unit of work with its
    ``media_updated`` event (as the sweeper records the status changes it makes)."""
    catalog = context.catalog
    media_id: str = args.id
    with catalog.changing() as session:
        media = session.scalar(select(Media).where(Media.id == media_id).with_for_update())
        if media is None:
            raise Refused(f"no media with id {media_id!r}")
        if media.status != MediaStatus.FAILED:
            raise Refused(f"media {media_id} is {media.status}, not FAILED: nothing to retry")
        if not media.storage_key:
            raise Refused(f"media {media_id} has no stored bytes (it links an external URL)")
        if not needs_processing(media.type, media.mime_type, media.storage_key):
            raise Refused(f"media {media_id} ({media.mime_type}) is not a type that gets processed")
        if not catalog.storage_io(catalog.storage.exists, media.storage_key):
            raise Refused(
                f"media {media_id} has no bytes: its stored object {media.storage_key} is "
                "missing; put the bytes back first"
            )
        previous_error = media.processing_error
        changes = ["status"] + (["processingError"] if previous_error else [])
        media.status = MediaStatus.PROCESSING
        media.processing_error = None
        media.processing_attempts = 0
        media.processing_claim = None
        media.processing_lease_until = None
        media.updated_at = next_updated_at(media.updated_at)
        catalog.record_media_event(session, MediaEvent.UPDATED, media, changes)
    data = {
        "id": media_id,
        "status": MediaStatus.PROCESSING,
        "previousStatus": MediaStatus.FAILED,
        "previousError": previous_error,
        "changes": changes,
    }

    def show(console: Console) -> None:
        console.print(f"media {media_id} is PROCESSING again; the service will process it")
        if previous_error:
            console.print(f"previous error: {previous_error}")

    out.result(data, show)
    return OK


# -- the parser -----------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _batch(text: str) -> int:
    value = _positive(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"must be at most 1000: {text!r}")
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"the service's config file (default: {DEFAULT_CONFIG})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print machine-readable JSON on stdout instead of tables",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate the media service: storage reconciliation, variants, the "
        "retention purge, the outbox and the job queues.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = commands.add_parser(
        "reconcile",
        parents=[common],
        help="delete stored objects no record owns; mark records whose bytes are gone FAILED",
    )
    sub.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    sub.set_defaults(run=reconcile)

    sub = commands.add_parser(
        "regenerate-variants",
        parents=[common],
        help="have the service remake preset variants whose recipe changed (over RPC)",
    )
    sub.add_argument(
        "--limit",
        type=_batch,
        default=20,
        help="media per regenerateVariants call, 1-1000 (default 20); calls repeat until a "
        "call finds fewer",
    )
    sub.add_argument(
        "--timeout", type=_timeout, default=600.0, help="seconds to wait for each call (600)"
    )
    sub.set_defaults(run=regenerate_variants)

    sub = commands.add_parser(
        "purge", parents=[common], help="purge soft-deleted media past the retention period"
    )
    sub.add_argument("--dry-run", action="store_true", help="list what would be purged")
    sub.add_argument(
        "--limit", type=_positive, default=1000, help="media a dry run lists at most (1000)"
    )
    sub.add_argument(
        "--batch", type=_batch, default=100, help="media purged per transaction batch (100)"
    )
    sub.set_defaults(run=purge)

    sub = commands.add_parser("outbox", parents=[common], help="the transactional outbox")
    outbox = sub.add_subparsers(dest="outbox_command", required=True, metavar="COMMAND")
    status = outbox.add_parser(
        "status", parents=[common], help="pending events: count, oldest age, by type"
    )
    status.set_defaults(run=outbox_status)

    sub = commands.add_parser(
        "jobs",
        parents=[common],
        help="processing jobs and upload sessions under way, oldest first",
    )
    sub.add_argument("--limit", type=_positive, default=50, help="rows listed per queue (50)")
    sub.set_defaults(run=jobs)

    sub = commands.add_parser(
        "retry", parents=[common], help="put a FAILED media back to PROCESSING"
    )
    sub.add_argument("id", help="the media id")
    sub.set_defaults(run=retry)
    return parser


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else REFUSED
    as_json = getattr(args, "json", False)
    config_path = getattr(args, "config", DEFAULT_CONFIG)
    out = Output(as_json)
    # The service's own warnings (an object deleted, a record marked FAILED, a sweep held
    # back) reach the operator on stderr; the libraries' chatter does not.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    context: Context | None = None
    try:
        context = Context(load_config(config_path))
        return int(args.run(context, args, out))
    except Refused as exc:
        return _fail(REFUSED, f"refused: {exc}")
    except Failure as exc:
        return _fail(FAILURE, str(exc))
    except SQLAlchemyError as exc:
        return _fail(FAILURE, f"database unavailable: {_database_error(exc)}")
    except StorageError as exc:
        return _fail(FAILURE, f"storage unavailable: {_one_line(exc)}")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        if context is not None:
            context.close()


def _fail(code: int, message: str) -> int:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()
    return code


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _database_error(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    return _one_line(original if original is not None else exc)


if __name__ == "__main__":
    sys.exit(main())
