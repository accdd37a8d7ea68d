"""Shared benchmark plumbing: machine info, statistics, RabbitMQ vhosts, databases, processes.

There is one way to do each thing here, so the benchmarks differ only in what they measure.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

# Imported first on purpose: ``import schemas`` before ``services.media`` is a circular import
# (schemas -> services.media.exceptions -> services.media/__init__ -> service -> schemas), and
# every benchmark imports this module before anything else.
import services.media  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
# The active virtualenv's scripts (nameko, alembic): the benchmarks run with it activated.
BIN = Path(sys.executable).parent

RABBIT_HOST = os.environ.get("BENCH_RABBIT_HOST", "127.0.0.1")
RABBIT_USER = os.environ.get("BENCH_RABBIT_USER", "guest")
RABBIT_PASSWORD = os.environ.get("BENCH_RABBIT_PASSWORD", "guest")
RABBIT_API = f"http://{RABBIT_HOST}:15672/api"
# A database that exists already, used only to CREATE and DROP the benchmark's own database.
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1/test")

PACKAGES = ("nameko", "kombu", "amqp", "eventlet", "sqlalchemy", "psycopg2-binary", "pillow")

# -- process hygiene ------------------------------------------------------------------------------


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop services and drop databases."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))


# -- machine and versions -------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def print_machine(title: str, extra: Mapping[str, str] | None = None) -> None:
    """Print what the numbers depend on, so results from different machines are not mixed up."""
    print(f"== {title}")
    print(f"date:    {date.today().isoformat()}")
    print(f"nproc:   {len(os.sched_getaffinity(0))} (os.cpu_count={os.cpu_count()})")
    print(f"cpu:     {cpu_model()}")
    print(f"kernel:  {platform.release()}")
    print(f"python:  {platform.python_version()} ({sys.executable})")
    print("pkgs:    " + ", ".join(f"{k} {v}" for k, v in package_versions().items()))
    for key, value in (extra or {}).items():
        print(f"{key + ':':<9}{value}")
    print()


# -- statistics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    n: int
    median: float
    p10: float
    p90: float
    minimum: float
    maximum: float


def summarize(samples: Sequence[float]) -> Stats:
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return Stats(
        n=len(samples),
        median=statistics.median(samples),
        p10=deciles[0],
        p90=deciles[-1],
        minimum=min(samples),
        maximum=max(samples),
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}" if seconds < 0.1 else f"{seconds * 1000:.1f}"


STAT_HEADERS = ["n", "p50 ms", "p10 ms", "p90 ms", "min ms", "max ms"]


def stat_cells(stats: Stats) -> list[str]:
    """Table cells matching :data:`STAT_HEADERS`."""
    values = (stats.median, stats.p10, stats.p90, stats.minimum, stats.maximum)
    return [str(stats.n), *(ms(value) for value in values)]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    # First column (the case) left-aligned, numbers right-aligned.
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(line.format(*headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))
    print()


# Per case, the samples of each round: per-round medians show whether a ratio is stable.
Rounds = dict[str, list[list[float]]]


def run_interleaved(
    cases: Mapping[str, Callable[[], object]], rounds: int, per_round: int
) -> Rounds:
    """Time every case ``per_round`` times per round, reversing the case order every other round,
    so warm-up, caches and background drift (timers, the broker, other tenants) hit all alike."""
    samples: Rounds = {name: [] for name in cases}
    names = list(cases)
    clock = time.perf_counter
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            call = cases[name]
            timings = []
            for _ in range(per_round):
                start = clock()
                call()
                timings.append(clock() - start)
            samples[name].append(timings)
    return samples


def flat(rounds: list[list[float]]) -> list[float]:
    return [sample for timings in rounds for sample in timings]


def round_ratios(samples: Rounds, numerator: str, denominator: str) -> list[float]:
    """The ratio of medians in each round: its spread says how much drift there was."""
    return [
        statistics.median(top) / statistics.median(bottom)
        for top, bottom in zip(samples[numerator], samples[denominator], strict=True)
    ]


def verdict(value: float, target: float) -> str:
    return f"{'MET' if value <= target else 'MISSED'} (target <= {target:g})"


# -- test data ------------------------------------------------------------------------------------


def png_bytes(target_size: int, seed: int = 0) -> bytes:
    """A valid PNG of random RGB pixels about ``target_size`` bytes: noise does not compress."""
    from PIL import Image  # imported late: only the upload benchmarks need Pillow

    side = max(1, int((target_size / 3) ** 0.5))
    noise = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    # compress_level=0 stores the noise as is: quick to make, same size as any level would give.
    Image.frombytes("RGB", (side, side), noise).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- RabbitMQ -------------------------------------------------------------------------------------


def _rabbit_api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        RABBIT_API + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "authorization": "Basic " + b64(f"{RABBIT_USER}:{RABBIT_PASSWORD}".encode()),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def rabbitmq_version() -> str:
    return str(_rabbit_api("GET", "/overview").get("rabbitmq_version", "unknown"))


@contextlib.contextmanager
def temp_vhost() -> Iterator[str]:
    """A fresh vhost, so queues of other runs (or of a crashed one) cannot answer our calls.

    Yields its AMQP URI; the vhost and everything in it is deleted on exit.
    """
    name = f"bench-{os.getpid()}-{secrets.token_hex(3)}"
    quoted = urllib.parse.quote(name, safe="")
    _rabbit_api("PUT", f"/vhosts/{quoted}", {})
    try:
        _rabbit_api(
            "PUT",
            f"/permissions/{quoted}/{urllib.parse.quote(RABBIT_USER, safe='')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        yield f"amqp://{RABBIT_USER}:{RABBIT_PASSWORD}@{RABBIT_HOST}:5672/{quoted}"
    finally:
        _rabbit_api("DELETE", f"/vhosts/{quoted}")


# -- databases ------------------------------------------------------------------------------------


def migrate(database_url: str, cwd: Path = REPO) -> None:
    """``alembic upgrade head``, exactly as an operator creates the schema (run in ``cwd``)."""
    result = subprocess.run(
        [str(BIN / "alembic"), "upgrade", "head"],
        cwd=cwd,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{result.stdout}{result.stderr}")


def postgres_version(url: str = PG_ADMIN_URL) -> str:
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return str(cursor.fetchone()[0])


@contextlib.contextmanager
def temp_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, dropped (even if still in use) on exit."""
    import psycopg2

    name = f"bench_{os.getpid()}_{secrets.token_hex(3)}"

    def admin(statement: str) -> None:
        connection = psycopg2.connect(PG_ADMIN_URL)
        try:
            connection.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    admin(f'CREATE DATABASE "{name}"')
    try:
        parsed = urllib.parse.urlsplit(PG_ADMIN_URL)
        yield urllib.parse.urlunsplit(parsed._replace(path="/" + name))
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- nameko processes -----------------------------------------------------------------------------


def start_nameko(
    module: str, env: Mapping[str, str], log_path: Path, cwd: Path = REPO
) -> subprocess.Popen[bytes]:
    """``nameko run --config config.yml <module>`` from the repo (or the source tree ``cwd``),
    output to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [str(BIN / "nameko"), "run", "--config", "config.yml", module],
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C meant for the benchmark must not kill it before
            # the benchmark's finally block has stopped it in order.
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM (nameko stops gracefully), then SIGKILL if it is still there after ``grace``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def wait_for_rpc(
    config: Mapping[str, Any],
    service: str,
    method: str,
    *args: Any,
    process: subprocess.Popen[bytes],
    log_path: Path,
    deadline: float = 60.0,
) -> None:
    """Poll ``service.method(*args)`` until it answers: only then is the service ready."""
    from nameko.standalone.rpc import ClusterRpcProxy

    give_up = time.monotonic() + deadline
    last_error: Exception | None = None
    # Calls to a queue that does not exist yet come back as basic.return, which py-amqp logs
    # as a warning per probe: noise, not a problem.
    amqp_logger = logging.getLogger("amqp")
    level = amqp_logger.level
    amqp_logger.setLevel(logging.ERROR)
    try:
        while time.monotonic() < give_up:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{service} exited with {process.returncode} before answering:\n"
                    + tail(log_path)
                )
            try:
                with ClusterRpcProxy(dict(config), timeout=2) as cluster:
                    getattr(getattr(cluster, service), method)(*args)
                return
            except Exception as exc:  # not declared yet, not consuming yet, ...: try again
                last_error = exc
                time.sleep(0.2)
    finally:
        amqp_logger.setLevel(level)
    raise RuntimeError(f"{service} did not answer within {deadline}s ({last_error!r})")


@dataclass
class Stack:
    """The media service and the no-op service running against throwaway resources."""

    config: dict[str, Any]
    env: dict[str, str]
    workdir: Path
    storage_root: Path
    database_url: str
    signing_key: str
    media_pid: int


@contextlib.contextmanager
def media_stack(extra_env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """Start ``media`` (SQLite, local storage, fresh vhost) and ``bench_noop`` as subprocesses.

    Everything (processes, vhost, database file, stored bytes) is gone after the ``with``.
    """
    workdir = Path(tempfile.mkdtemp(prefix="media-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with temp_vhost() as amqp_uri:
            storage_root = workdir / "storage"
            database_url = f"sqlite:///{workdir / 'media.db'}"
            migrate(database_url)
            signing_key = secrets.token_urlsafe(32)
            env = {
                **os.environ,
                "AMQP_URI": amqp_uri,
                "DATABASE_URL": database_url,
                "STORAGE_ROOT": str(storage_root),
                "MEDIA_DEV_MODE": "true",
                # With a key given, dev mode does not write var/dev-url-signing-key in the repo.
                "URL_SIGNING_KEY": signing_key,
                **(extra_env or {}),
            }
            config = {"AMQP_URI": amqp_uri, "serializer": "json"}
            try:
                for module, name, probe in (
                    ("services.media", "media", ("findAll", {"limit": 1})),
                    ("bench.noop_service", "bench_noop", ("ping",)),
                ):
                    log_path = workdir / f"{name}.log"
                    process = start_nameko(module, env, log_path)
                    processes.append(process)
                    wait_for_rpc(config, name, *probe, process=process, log_path=log_path)
                yield Stack(
                    config,
                    env,
                    workdir,
                    storage_root,
                    database_url,
                    signing_key,
                    media_pid=processes[0].pid,
                )
            finally:
                # Before the vhost goes, or the services log connection errors while stopping.
                for process in reversed(processes):
                    stop_process(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- the domain, in process -----------------------------------------------------------------------


def service_config(overrides: Mapping[str, str]) -> dict[str, Any]:
    """config.yml as ``nameko run`` reads it, with ``overrides`` as the environment."""
    import yaml

    with warnings.catch_warnings():
        # nameko's CLI module imports pkg_resources, which warns on import; nothing to act on.
        warnings.simplefilter("ignore", UserWarning)
        from nameko.cli.main import setup_yaml_parser

    setup_yaml_parser()
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        return yaml.safe_load((REPO / "config.yml").read_text())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RssSampler:
    """Peak resident memory of another process, sampled every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_video(path: Path, size: int) -> None:
    """An MP4-shaped file (the policy accepts it) of random bytes, so nothing compresses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
        remaining = size - 24
        block = os.urandom(1024 * 1024)
        while remaining > 0:
            handle.write(block[: min(len(block), remaining)])
            remaining -= len(block)
