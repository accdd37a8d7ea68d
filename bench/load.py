"""Load and soak: many sibling clients for minutes, a mixed workload, one and two service instances.

Each run gets a fresh RabbitMQ vhost, a fresh PostgreSQL database (``alembic upgrade head``) and
a temp STORAGE_ROOT shared by the instances, and starts ``nameko run services.media`` once per
instance, each with its own WEB_SERVER_ADDRESS. The clients run in a few client processes
(``--procs``), each an eventlet hub with its share of the clients as green threads; every client
is one user with its own ``ClusterRpcProxy`` and its own HTTP connections. Each client first
uploads its own seed media, then, until the deadline, picks operations at random by weight:
``findOne``, ``findAll`` and ``findByEntity`` pages, ``upload_file`` of small PNGs, ``update``,
``remove``, ``getUrl`` followed by a download of the signed link, and downloads of public media
from their stable URL. Downloads go to the instances in turn and are checked (status, size,
sha256). This process samples, every second, the resident memory of each service and the CPU
time of the services, the client processes, the broker and PostgreSQL from ``/proc``.

Run: ``python -m bench.load`` (both runs, 300 s x 50 clients each, ~13 min), or e.g.
``python -m bench.load --duration 20 --clients 10 --instances 1``. ``--code HEAD`` runs the
services from a ``git archive`` of that commit instead of the work tree; ``--json FILE`` writes
every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import itertools
import json
import math
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import (
    BIN,
    REPO,
    _rabbit_api,
    b64,
    exit_on_sigterm,
    migrate,
    png_bytes,
    postgres_version,
    print_machine,
    print_table,
    rabbitmq_version,
    start_nameko,
    stop_process,
    tail,
    temp_postgres_database,
    temp_vhost,
    wait_for_rpc,
)

LOCAL = "127.0.0.1"
RPC_TIMEOUT = 30.0
HTTP_TIMEOUT = 30.0
SEED_PER_CLIENT = 10
MIN_OWN = 5  # a client removes only while it owns more media than this
ENTITIES = 10  # media are linked to ("course", "0".."9"): findByEntity pages mix users
PAGES_PER_WALK = 5  # findAll follows nextCursor this many pages, then starts again
IMAGE_POOL = 16
IMAGE_BYTES = (2_000, 24_000)  # small PNGs, noise so they do not compress
FIRST_ERRORS = 10
TARGET_RATIO = 1.6
RELAY_WAIT = 5.0  # the outbox relay runs every second; young rows are the worker's own

# Relative weights of what a client does next. "getUrl" is followed by a download of the link,
# timed as its own method, so downloads are ~20% of the operations.
WEIGHTS = {
    "findOne": 25,
    "findAll": 10,
    "findByEntity": 10,
    "upload_file": 10,
    "update": 10,
    "remove": 5,
    "getUrl": 10,
    "download public": 10,
}
DOWNLOAD_SIGNED = "download signed"
METHODS = [*WEIGHTS, DOWNLOAD_SIGNED]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        return probe.getsockname()[1]


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


# == client side: runs in the client processes, after eventlet.monkey_patch() =====================


class LoadClient:
    """One sibling caller: a user with its own RPC proxy, HTTP connections and media."""

    def __init__(self, spec: dict[str, Any], number: int, images: list[bytes]) -> None:
        self.number = number
        self.user = f"load-user-{number}"
        self.rng = random.Random(number * 7919 + 17)
        self.config = {"AMQP_URI": spec["amqp_uri"], "serializer": "json"}
        self.ports = spec["ports"]
        self.next_port = itertools.islice(itertools.cycle(self.ports), number, None).__next__
        self.images = [(image, b64(image)) for image in images]
        self.own: dict[str, dict[str, Any]] = {}  # id -> {size, checksum, public}
        self.connections: dict[int, http.client.HTTPConnection] = {}
        self.exits = contextlib.ExitStack()
        self.media: Any = None
        self.cursor: str | None = None
        self.pages = 0
        self.counter = 0
        # Results of the measured window.
        self.latencies: dict[str, list[float]] = {method: [] for method in METHODS}
        self.warmup_ops = 0
        self.timeline: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.first_errors: list[dict[str, Any]] = []
        self.conflicts: Counter[str] = Counter()
        self._pending_download = ""

    # -- set-up ---------------------------------------------------------------------------------

    def connect(self) -> None:
        from services.media.client import media_rpc

        self.media = self.exits.enter_context(
            media_rpc(self.config, timeout=RPC_TIMEOUT, user_id=self.user)
        )

    def seed(self) -> None:
        for _ in range(SEED_PER_CLIENT):
            self.upload()

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.exits.close()

    # -- operations -----------------------------------------------------------------------------

    def upload(self) -> None:
        raw, encoded = self.rng.choice(self.images)
        public = self.rng.random() < 0.5
        self.counter += 1
        record = self.media.upload_file(
            {
                "content": encoded,
                "originalName": f"load-{self.number}-{self.counter}.png",
                "userId": self.user,
                "entityType": "course",
                "entityId": str(self.rng.randrange(ENTITIES)),
                "isPublic": public,
                "tags": ["load", f"c{self.number % 5}"],
            }
        )
        if record["size"] != len(raw) or record["userId"] != self.user:
            raise AssertionError(f"upload_file answered {record['size']} bytes for {len(raw)}")
        self.own[record["id"]] = {
            "size": record["size"],
            "checksum": record["checksum"],
            "public": record["isPublic"],
        }

    def pick(self, public: bool | None = None) -> str:
        ids = [
            media_id
            for media_id, facts in self.own.items()
            if public is None or facts["public"] == public
        ]
        return self.rng.choice(ids or list(self.own))

    def find_one(self) -> None:
        media_id = self.pick()
        record = self.media.findOne(media_id)
        if record["id"] != media_id:
            raise AssertionError(f"findOne({media_id}) answered {record['id']}")

    def find_all(self) -> None:
        query: dict[str, Any] = {"limit": 20}
        if self.cursor:
            query["cursor"] = self.cursor
        page = self.media.findAll(query)
        self.pages += 1
        self.cursor = page["nextCursor"] if self.pages < PAGES_PER_WALK else None
        if self.cursor is None:
            self.pages = 0

    def find_by_entity(self) -> None:
        entity = str(self.rng.randrange(ENTITIES))
        page = self.media.findByEntity("course", entity, {"limit": 20})
        for item in page["items"]:
            if item["entityId"] != entity:
                raise AssertionError(f"findByEntity({entity}) returned entity {item['entityId']}")

    def update(self) -> None:
        self.counter += 1
        media_id = self.pick()
        record = self.media.update(
            media_id, {"caption": f"caption {self.counter}", "tags": ["load", f"u{self.counter}"]}
        )
        if record["caption"] != f"caption {self.counter}":
            raise AssertionError(f"update({media_id}) answered caption {record['caption']!r}")

    def remove(self) -> None:
        media_id = self.pick()
        record = self.media.remove(media_id)
        del self.own[media_id]
        if record["status"] != "DELETED":
            raise AssertionError(f"remove({media_id}) answered status {record['status']}")

    def get_url(self) -> str:
        media_id = self.pick(public=False)
        self._pending_download = media_id
        return self.media.getUrl(media_id, {"expiresIn": 600})["url"]

    def download(self, media_id: str, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname != LOCAL:  # every request stays on this machine
            raise AssertionError(f"not a local URL: {url}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        # The link names the instance that made it; any instance serves it (shared key, disk).
        port = self.next_port()
        connection = self.connections.get(port)
        if connection is None:
            connection = http.client.HTTPConnection(LOCAL, port, timeout=HTTP_TIMEOUT)
            self.connections[port] = connection
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            body = response.read()
            if response.will_close:
                connection.close()
                del self.connections[port]
        except Exception:
            connection.close()
            self.connections.pop(port, None)
            raise
        facts = self.own[media_id]
        if response.status != 200:
            raise AssertionError(
                f"GET {parts.path} on :{port}: HTTP {response.status} {body[:200]!r}"
            )
        if len(body) != facts["size"]:
            raise AssertionError(
                f"GET {parts.path} on :{port}: {len(body)} bytes, not {facts['size']}"
            )
        if "sha256:" + hashlib.sha256(body).hexdigest() != facts["checksum"]:
            raise AssertionError(f"GET {parts.path} on :{port}: bytes differ from the checksum")

    def download_public(self) -> None:
        media_id = self.pick(public=True)
        if self.own[media_id]["public"]:
            url = f"http://{LOCAL}:{self.ports[0]}/files/{media_id}"
        else:  # no public media left: a signed link instead
            url = self.media.getUrl(media_id, {"expiresIn": 600})["url"]
        self.download(media_id, url)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, start: float, measure_from: float, deadline: float) -> None:
        from services.media.client import Conflict

        methods = list(WEIGHTS)
        weights = list(WEIGHTS.values())
        operations: dict[str, Callable[[], Any]] = {
            "findOne": self.find_one,
            "findAll": self.find_all,
            "findByEntity": self.find_by_entity,
            "upload_file": self.upload,
            "update": self.update,
            "remove": self.remove,
            "getUrl": self.get_url,
            "download public": self.download_public,
        }
        clock = time.perf_counter
        # Start spread over 0.5 s, so the clients do not all send their first call at once.
        time.sleep(max(0.0, start - time.time()) + self.rng.random() * 0.5)
        while (now := time.time()) < deadline:
            method = self.rng.choices(methods, weights)[0]
            if method == "remove" and len(self.own) <= MIN_OWN:
                method = "upload_file"
            measured = now >= measure_from
            began = clock()
            try:
                result = operations[method]()
            except Conflict as exc:  # the contract's answer to a change racing another change
                self.conflicts[method] += 1
                self._record_error(method, exc, now, counted=False)
                continue
            except Exception as exc:
                if measured:
                    self.errors[f"{method}: {type(exc).__name__}"] += 1
                self._record_error(method, exc, now, counted=measured)
                continue
            finally:
                elapsed = clock() - began
            self._record(method, elapsed, now, measured, measure_from)
            if method == "getUrl":
                media_id = self._pending_download
                now = time.time()
                measured = now >= measure_from
                began = clock()
                try:
                    self.download(media_id, result)
                except Exception as exc:
                    if measured:
                        self.errors[f"{DOWNLOAD_SIGNED}: {type(exc).__name__}"] += 1
                    self._record_error(DOWNLOAD_SIGNED, exc, now, counted=measured)
                    continue
                self._record(DOWNLOAD_SIGNED, clock() - began, now, measured, measure_from)

    def _record(
        self, method: str, elapsed: float, now: float, measured: bool, measure_from: float
    ) -> None:
        if measured:
            self.latencies[method].append(elapsed)
            self.timeline[int(now - measure_from)] += 1
        else:
            self.warmup_ops += 1

    def _record_error(self, method: str, exc: Exception, now: float, counted: bool) -> None:
        if len(self.first_errors) < FIRST_ERRORS:
            self.first_errors.append(
                {
                    "time": now,
                    "client": self.user,
                    "method": method,
                    "counted": counted,
                    "error": f"{type(exc).__name__}: {exc}"[:600],
                    "traceback": traceback.format_exc(limit=4)[-1500:],
                }
            )


def hub_lag(measure_from: float, deadline: float, lags: list[float]) -> None:
    """How late a 10 ms sleep wakes up: if this client process were the bottleneck, its green
    threads would wait for the hub, and this would grow towards the service latencies."""
    import eventlet

    while time.time() < measure_from:
        eventlet.sleep(0.05)
    while time.time() < deadline:
        began = time.perf_counter()
        eventlet.sleep(0.01)
        lags.append(time.perf_counter() - began - 0.01)


def worker_main() -> None:
    """A client process: ``python -c "import eventlet; eventlet.monkey_patch(); ..." SPEC``."""
    import eventlet

    spec = json.loads(Path(sys.argv[1]).read_text())
    rng = random.Random(spec["process"])
    images = [
        png_bytes(rng.randint(*IMAGE_BYTES), seed=spec["process"] * 1000 + number)
        for number in range(IMAGE_POOL)
    ]
    clients = [LoadClient(spec, number, images) for number in spec["clients"]]
    try:
        for step in ("connect", "seed"):
            threads = [eventlet.spawn(getattr(client, step)) for client in clients]
            for thread in threads:
                thread.wait()
        Path(spec["ready"] + ".tmp").write_text("ready")
        os.replace(spec["ready"] + ".tmp", spec["ready"])
        go = Path(spec["go"])
        while not go.exists():
            eventlet.sleep(0.05)
        times = json.loads(go.read_text())
        threads = [
            eventlet.spawn(client.run, times["start"], times["measure_from"], times["deadline"])
            for client in clients
        ]
        lags: list[float] = []
        probe = eventlet.spawn(hub_lag, times["measure_from"], times["deadline"], lags)
        for thread in threads:
            thread.wait()
        probe.wait()
        result = {
            "latencies": {
                method: [x for client in clients for x in client.latencies[method]]
                for method in METHODS
            },
            "warmup_ops": sum(client.warmup_ops for client in clients),
            "timeline": dict(sum((client.timeline for client in clients), Counter())),
            "errors": dict(sum((client.errors for client in clients), Counter())),
            "conflicts": dict(sum((client.conflicts for client in clients), Counter())),
            "first_errors": sorted(
                (error for client in clients for error in client.first_errors),
                key=lambda error: error["time"],
            )[:FIRST_ERRORS],
            "own_media": sum(len(client.own) for client in clients),
            "hub_lag": lags,
        }
        Path(spec["result"] + ".tmp").write_text(json.dumps(result))
        os.replace(spec["result"] + ".tmp", spec["result"])
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()


# == this process: the stack, the samplers, the report ============================================

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def all_processes() -> dict[int, tuple[str, int, int]]:
    """Every process: pid -> (comm, utime + stime ticks of all its threads, starttime)."""
    processes = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rfind(")") + 2 :].split()
            comm = text[text.index("(") + 1 : text.rfind(")")]
            processes[int(entry.name)] = (comm, int(fields[11]) + int(fields[12]), int(fields[19]))
    return processes


def pids_named(name: str, cmdline_contains: str = "") -> list[int]:
    pids = []
    for pid, (comm, _, _) in all_processes().items():
        if comm == name:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if cmdline_contains.encode() in cmdline:
                    pids.append(pid)
    return pids


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # up to steal; guest time is already in user
    return total - idle, total


def uptime_ticks() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * CLOCK_TICK)


class Sampler:
    """Every ``interval`` s: RSS of the services, CPU ticks of each process group, machine CPU."""

    def __init__(
        self,
        groups: dict[str, Callable[[], list[int]]],
        rss_pids: dict[str, int],
        database: Callable[[], dict[str, int]] | None = None,
    ):
        self.groups = groups
        self.rss_pids = rss_pids
        self.database = database
        self.samples: list[dict[str, Any]] = []
        self.database_samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self, full: bool = True) -> dict[str, Any]:
        """RSS and machine CPU; with ``full``, also every process's CPU and the groups' pids."""
        busy, total = machine_ticks()
        sample: dict[str, Any] = {
            "time": time.time(),
            "uptime": uptime_ticks(),
            "machine": (busy, total),
            "rss": {name: rss_bytes(pid) for name, pid in self.rss_pids.items()},
        }
        if full:
            sample["procs"] = all_processes()
            sample["groups"] = {group: pids() for group, pids in self.groups.items()}
        return sample

    def _run(self) -> None:
        for tick in itertools.count(1):
            if self._stop.wait(1.0):
                return
            self.samples.append(self.snapshot(full=False))
            if self.database is not None and tick % 5 == 0:
                with contextlib.suppress(Exception):  # a sample missed is no reason to stop
                    self.database_samples.append({"time": time.time(), **self.database()})

    def __enter__(self) -> Sampler:
        self.samples.append(self.snapshot(full=False))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_between(first: dict[str, Any], last: dict[str, Any]) -> tuple[dict[str, float], Counter]:
    """CPU seconds each group used between two full snapshots, and the other processes' by
    name. A process born in between counts whole; one that ended in between is not seen."""

    def ticks(pid: int) -> int:
        _, total, started = last["procs"][pid]
        before = first["procs"].get(pid)
        if before is not None and before[2] == started:
            return total - before[1]
        return total if started >= first["uptime"] else 0

    used: dict[str, float] = {}
    grouped: set[int] = set()
    for group, pids in last["groups"].items():
        used[group] = sum(ticks(pid) for pid in pids if pid in last["procs"]) / CLOCK_TICK
        grouped.update(pids)
    others: Counter[str] = Counter()
    for pid, (comm, _, _) in last["procs"].items():
        if pid not in grouped:
            others[comm] += ticks(pid) / CLOCK_TICK
    busy = (last["machine"][0] - first["machine"][0]) / CLOCK_TICK
    total = (last["machine"][1] - first["machine"][1]) / CLOCK_TICK
    used["machine busy"] = busy
    used["machine total"] = total
    return used, others


@contextlib.contextmanager
def cleanup(items: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    try:
        yield items
    finally:
        for process in reversed(items):
            with contextlib.suppress(Exception):
                stop_process(process, grace=15.0)


def wait_until(check: Callable[[], bool], what: str, timeout: float, poll: float = 0.25) -> None:
    give_up = time.monotonic() + timeout
    while not check():
        if time.monotonic() > give_up:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOCAL}:{port}{path}", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def rpc_consumers(vhost: str) -> int:
    try:
        queue = _rabbit_api("GET", f"/queues/{urllib.parse.quote(vhost, safe='')}/rpc-media")
    except OSError:
        return 0
    return int(queue.get("consumers") or 0)


def database_facts(database_url: str) -> dict[str, Any]:
    """Media per status, and events: all, not yet published, and not published 10 s on."""
    import psycopg2

    old = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=10)  # naive UTC, as stored
    with contextlib.closing(psycopg2.connect(database_url)) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT status, count(*) FROM media GROUP BY status ORDER BY status")
            statuses = {status: count for status, count in cursor.fetchall()}
            cursor.execute(
                "SELECT count(*), count(*) FILTER (WHERE published_at IS NULL),"
                " count(*) FILTER (WHERE published_at IS NULL AND created_at < %s)"
                " FROM outbox_events",
                (old,),
            )
            events, unpublished, stale = cursor.fetchone()
        connection.rollback()
    return {
        "media": statuses,
        "events": events,
        "unpublished": unpublished,
        "unpublished_after_10s": stale,
    }


def log_problems(path: Path) -> tuple[int, int, list[str]]:
    """Tracebacks and ERROR lines in a service log, and the first few of them."""
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        tracebacks = sum(line.startswith("Traceback") for line in lines)
        errors = [line for line in lines if " ERROR " in line or line.startswith("ERROR")]
        first = [
            "\n".join(lines[i : i + 12])
            for i, line in enumerate(lines)
            if line.startswith("Traceback") or " ERROR " in line
        ][:3]
        return tracebacks, len(errors), first
    return 0, 0, []


@contextlib.contextmanager
def service_tree(revision: str | None) -> Iterator[tuple[Path, str]]:
    """Where the services run from: the work tree, or ``git archive <revision>`` in a temp dir
    (the same virtualenv; ``nameko run`` puts its working directory first on ``sys.path``)."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()

    if revision is None:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "services"))
        yield (
            REPO,
            f"work tree at {git('rev-parse', '--short', 'HEAD')}"
            + (" with uncommitted changes under services/" if dirty else ""),
        )
        return
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    tree = Path(tempfile.mkdtemp(prefix="media-load-code-"))
    try:
        archive = subprocess.run(
            ["git", "archive", commit], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        yield tree, f"commit {commit[:7]} ({revision}), exported with git archive"
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def run_load(instances: int, args: argparse.Namespace, code: Path) -> dict[str, Any]:
    """One run: a fresh stack with ``instances`` services, the clients, the measurements."""
    print(f"-- run with {instances} instance(s): setting up", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="media-load-"))
    try:
        with (
            temp_vhost() as amqp_uri,
            temp_postgres_database() as database_url,
            cleanup([]) as services,
            cleanup([]) as workers,
        ):
            vhost = urllib.parse.unquote(urllib.parse.urlsplit(amqp_uri).path[1:])
            migrate(database_url, cwd=code)
            storage_root = workdir / "storage"
            signing_key = secrets.token_urlsafe(32)
            ports = [free_port() for _ in range(instances)]
            config = {"AMQP_URI": amqp_uri, "serializer": "json"}
            logs = []
            for number, port in enumerate(ports, 1):
                env = {
                    **os.environ,
                    "AMQP_URI": amqp_uri,
                    "DATABASE_URL": database_url,
                    "STORAGE_ROOT": str(storage_root),
                    "MEDIA_DEV_MODE": "true",
                    "URL_SIGNING_KEY": signing_key,
                    "WEB_SERVER_ADDRESS": f"{LOCAL}:{port}",
                    "PUBLIC_BASE_URL": f"http://{LOCAL}:{port}",
                    "PYTHONPATH": str(code),
                }
                logs.append(workdir / f"media-{number}.log")
                services.append(start_nameko("services.media", env, logs[-1], cwd=code))
            for process, port, log in zip(services, ports, logs, strict=True):
                wait_for_rpc(
                    config, "media", "findAll", {"limit": 1}, process=process, log_path=log
                )
                wait_until(lambda port=port: http_ok(port, "/health"), f"/health on {port}", 60)
            # RPC answers from any instance: only the queue's consumers show all of them are in.
            wait_until(lambda: rpc_consumers(vhost) >= instances, "rpc-media consumers", 60, 1)

            broker = pids_named("beam.smp", "rabbit boot")  # the server, not rabbitmqctl's VMs
            service_pids = {f"media-{n}": p.pid for n, p in enumerate(services, 1)}
            groups: dict[str, Callable[[], list[int]]] = {
                **{name: (lambda pid=pid: [pid]) for name, pid in service_pids.items()},
                "clients": lambda: [worker.pid for worker in workers],
                "rabbitmq": lambda: broker,
                "postgres": lambda: pids_named("postgres"),
                "bench": lambda: [os.getpid()],
            }

            def backlog() -> dict[str, int]:
                facts = database_facts(database_url)
                queue = _rabbit_api(
                    "GET", f"/queues/{urllib.parse.quote(vhost, safe='')}/rpc-media"
                )
                return {
                    "processing": facts["media"].get("PROCESSING", 0),
                    "unpublished": facts["unpublished"],
                    "unpublished_after_10s": facts["unpublished_after_10s"],
                    "rpc_ready": int(queue.get("messages_ready") or 0),
                    "rpc_unacked": int(queue.get("messages_unacknowledged") or 0),
                }

            with Sampler(groups, service_pids, backlog) as sampler:
                procs = max(1, min(args.procs, args.clients))
                specs = []
                for process_number in range(procs):
                    spec = {
                        "process": process_number,
                        "amqp_uri": amqp_uri,
                        "ports": ports,
                        "clients": list(range(process_number, args.clients, procs)),
                        "ready": str(workdir / f"ready-{process_number}"),
                        "go": str(workdir / "go"),
                        "result": str(workdir / f"result-{process_number}.json"),
                    }
                    spec_path = workdir / f"spec-{process_number}.json"
                    spec_path.write_text(json.dumps(spec))
                    specs.append(spec)
                    log_path = workdir / f"client-{process_number}.log"
                    with open(log_path, "wb") as log:
                        workers.append(
                            subprocess.Popen(
                                [
                                    str(BIN / "python"),
                                    "-c",
                                    "import eventlet; eventlet.monkey_patch(); "
                                    "from bench.load import worker_main; worker_main()",
                                    str(spec_path),
                                ],
                                cwd=REPO,
                                stdout=log,
                                stderr=subprocess.STDOUT,
                                start_new_session=True,
                            )
                        )

                def workers_ready() -> bool:
                    for number, worker in enumerate(workers):
                        if worker.poll() is not None:
                            raise RuntimeError(
                                f"client process {number} exited with {worker.returncode}:\n"
                                + tail(workdir / f"client-{number}.log")
                            )
                    return all(Path(spec["ready"]).exists() for spec in specs)

                wait_until(workers_ready, "the clients to connect and seed", 300)
                print(
                    f"   {args.clients} clients in {procs} process(es) seeded "
                    f"{args.clients * SEED_PER_CLIENT} media; waiting for processing",
                    flush=True,
                )
                from nameko.standalone.rpc import ClusterRpcProxy

                with ClusterRpcProxy(config, timeout=RPC_TIMEOUT) as cluster:
                    query = {"status": "PROCESSING", "withTotal": True, "limit": 1}
                    wait_until(
                        lambda: cluster.media.findAll(query)["total"] == 0,
                        "processing of the seed media",
                        300,
                        0.5,
                    )
                start = time.time() + 1.0
                times = {
                    "start": start,
                    "measure_from": start + args.warmup,
                    "deadline": start + args.warmup + args.duration,
                }
                go = workdir / "go"
                (workdir / "go.tmp").write_text(json.dumps(times))
                os.replace(workdir / "go.tmp", go)
                before_load = sampler.snapshot()
                print(
                    f"   load: {args.warmup:g} s warm-up, then {args.duration:g} s measured",
                    flush=True,
                )
                time.sleep(max(0.0, times["measure_from"] - time.time()))
                window_start = sampler.snapshot()
                time.sleep(max(0.0, times["deadline"] - time.time()))
                window_end = sampler.snapshot()
                for number, worker in enumerate(workers):
                    try:
                        worker.wait(timeout=RPC_TIMEOUT + 30)
                    except subprocess.TimeoutExpired as exc:
                        raise RuntimeError(
                            f"client process {number} did not finish after the deadline"
                        ) from exc
                    if worker.returncode != 0:
                        raise RuntimeError(
                            f"client process {number} exited with {worker.returncode}:\n"
                            + tail(workdir / f"client-{number}.log")
                        )
                time.sleep(2.0)  # what the services hold once the calls are over
                after_load = sampler.snapshot()
                at_deadline = database_facts(database_url)
                # With no calls left, the timers drain what load left behind (bounded wait).
                drain_started = time.monotonic()
                with contextlib.suppress(RuntimeError):
                    wait_until(
                        lambda: not database_facts(database_url)["media"].get("PROCESSING"),
                        "the processing backlog to drain",
                        args.drain,
                        1.0,
                    )
                drained_in = time.monotonic() - drain_started
                time.sleep(RELAY_WAIT)
                facts = database_facts(database_url)
                facts["at_deadline"] = at_deadline
                facts["drain_s"] = drained_in
            results = [json.loads(Path(spec["result"]).read_text()) for spec in specs]
            problems = {Path(log).stem: log_problems(log) for log in logs}
            health = {port: http_ok(port, "/health") for port in ports}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    return summarize_run(
        instances,
        args,
        times,
        results,
        sampler.samples,
        sampler.database_samples,
        (before_load, window_start, window_end, after_load),
        facts,
        problems,
        health,
    )


def summarize_run(
    instances: int,
    args: argparse.Namespace,
    times: dict[str, float],
    results: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    database_samples: list[dict[str, Any]],
    marks: tuple[dict[str, Any], ...],
    facts: dict[str, Any],
    problems: dict[str, tuple[int, int, list[str]]],
    health: dict[int, bool],
) -> dict[str, Any]:
    before_load, window_start, window_end, after_load = marks
    duration = times["deadline"] - times["measure_from"]
    methods: dict[str, Any] = {}
    total_ops = 0
    for method in METHODS:
        ordered = sorted(x for result in results for x in result["latencies"][method])
        total_ops += len(ordered)
        methods[method] = {
            "ops": len(ordered),
            "ops_per_s": len(ordered) / duration,
            "p50_ms": percentile(ordered, 0.50) * 1000,
            "p99_ms": percentile(ordered, 0.99) * 1000,
            "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
        }
    timeline: Counter[int] = Counter()
    for result in results:
        timeline.update({int(k): v for k, v in result["timeline"].items()})
    per_second = [timeline.get(second, 0) for second in range(int(duration))]
    errors: Counter[str] = Counter()
    conflicts: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
        conflicts.update(result["conflicts"])
    first_errors = sorted(
        (error for result in results for error in result["first_errors"]),
        key=lambda error: error["time"],
    )[:FIRST_ERRORS]
    lags = sorted(x for result in results for x in result["hub_lag"])
    hub_lag = {
        "p50": percentile(lags, 0.5) * 1000,
        "p99": percentile(lags, 0.99) * 1000,
        "max": (lags[-1] * 1000) if lags else float("nan"),
    }
    for error in first_errors:
        error["at_s"] = round(error.pop("time") - times["measure_from"], 2)

    cpu, others = cpu_between(window_start, window_end)
    window = [s for s in samples if times["measure_from"] <= s["time"] <= times["deadline"]]
    memory: dict[str, Any] = {}
    for name in before_load["rss"]:
        series = [(s["time"] - times["measure_from"], s["rss"][name]) for s in window]
        series = [(t, rss) for t, rss in series if rss is not None]
        slope = float("nan")
        if len(series) >= 3:
            fit = statistics.linear_regression([t for t, _ in series], [r for _, r in series])
            slope = fit.slope * 60 / 2**20
        memory[name] = {
            "before_load_mib": before_load["rss"][name] / 2**20,
            "start_mib": window_start["rss"][name] / 2**20,
            "end_mib": window_end["rss"][name] / 2**20,
            "after_mib": (after_load["rss"][name] or 0) / 2**20,
            "max_mib": max(r for _, r in series) / 2**20 if series else float("nan"),
            "slope_mib_per_min": slope,
            "samples": [(round(t, 1), round(r / 2**20, 2)) for t, r in series],
        }
    return {
        "instances": instances,
        "clients": args.clients,
        "procs": max(1, min(args.procs, args.clients)),
        "duration_s": duration,
        "warmup_s": args.warmup,
        "ops": total_ops,
        "ops_per_s": total_ops / duration,
        "warmup_ops": sum(result["warmup_ops"] for result in results),
        "per_second": per_second,
        "methods": methods,
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "conflicts": dict(conflicts),
        "first_errors": first_errors,
        "cpu_seconds": cpu,
        "other_processes_cpu_seconds": {
            comm: round(seconds, 2) for comm, seconds in others.most_common(8) if seconds > 0
        },
        "client_hub_lag_ms": hub_lag,
        "memory": memory,
        "database": facts,
        "database_samples": [
            {**sample, "time": round(sample["time"] - times["measure_from"], 1)}
            for sample in database_samples
        ],
        "client_media_at_end": sum(result["own_media"] for result in results),
        "service_logs": {
            name: {"tracebacks": t, "error_lines": e, "first": first}
            for name, (t, e, first) in problems.items()
        },
        "health_after": {str(port): ok for port, ok in health.items()},
    }


def cores(run: dict[str, Any], group: str) -> float:
    return run["cpu_seconds"][group] / run["duration_s"]


def bound_reading(run: dict[str, Any]) -> str:
    ncpu = len(os.sched_getaffinity(0))
    used = run["cpu_seconds"]
    busy = used["machine busy"] / used["machine total"]
    services = [g for g in used if g.startswith("media-")]
    hottest = max(services, key=lambda g: used[g])
    ranked = sorted(
        (g for g in used if not g.startswith("machine")), key=lambda g: used[g], reverse=True
    )
    shares = ", ".join(f"{g} {cores(run, g):.2f}" for g in ranked)
    if busy >= 0.9:
        verdict = f"CPU of the machine: {busy:.0%} of {ncpu} cores busy"
    elif cores(run, hottest) >= 0.9:
        verdict = f"{hottest}: one service process near a full core ({cores(run, hottest):.2f})"
    else:
        verdict = f"not CPU ({busy:.0%} of {ncpu} cores busy): waiting (latency, locks, I/O)"
    return f"{verdict}; cores used: {shares}"


def print_run(run: dict[str, Any]) -> None:
    title = (
        f"{run['instances']} instance(s), {run['clients']} clients in {run['procs']} process(es)"
    )
    print(f"\n== {title}: {run['duration_s']:.0f} s measured after {run['warmup_s']:g} s warm-up")
    rows = []
    for method, figures in run["methods"].items():
        method_errors = sum(n for key, n in run["errors"].items() if key.split(":")[0] == method)
        rows.append(
            [
                method,
                f"{figures['ops']}",
                f"{figures['ops_per_s']:.1f}",
                f"{figures['p50_ms']:.1f}",
                f"{figures['p99_ms']:.1f}",
                f"{figures['max_ms']:.0f}",
                f"{method_errors}",
            ]
        )
    rows.append(
        ["all", f"{run['ops']}", f"{run['ops_per_s']:.1f}", "", "", "", f"{run['error_count']}"]
    )
    print_table(["method", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"], rows)
    per_10 = [sum(run["per_second"][i : i + 10]) / 10 for i in range(0, len(run["per_second"]), 10)]
    if per_10:
        print(
            "throughput per 10 s window, ops/s: "
            + " ".join(f"{v:.0f}" for v in per_10)
            + f"  (min {min(per_10):.0f}, max {max(per_10):.0f})"
        )
    print(f"errors: {run['error_count']}" + (f" {run['errors']}" if run["errors"] else ""))
    if run["conflicts"]:
        print(f"Conflict answers (not counted as errors): {run['conflicts']}")
    for error in run["first_errors"]:
        print(f"  at {error['at_s']} s, {error['client']}, {error['method']}: {error['error']}")
    rows = []
    for name, mem in run["memory"].items():
        rows.append(
            [
                name,
                f"{mem['before_load_mib']:.1f}",
                f"{mem['start_mib']:.1f}",
                f"{mem['end_mib']:.1f}",
                f"{mem['max_mib']:.1f}",
                f"{mem['after_mib']:.1f}",
                f"{mem['slope_mib_per_min']:+.2f}",
            ]
        )
    print_table(
        [
            "service RSS MiB",
            "before load",
            "start",
            "end",
            "max",
            "2 s after",
            "trend MiB/min",
        ],
        rows,
    )
    for name, mem in run["memory"].items():
        samples = mem["samples"]
        step = max(1, len(samples) // 10)
        print(
            f"{name} RSS over the run (s: MiB): "
            + ", ".join(f"{t:.0f}: {r:.1f}" for t, r in samples[::step])
        )
    used = run["cpu_seconds"]
    rows = [
        [group, f"{seconds:.1f}", f"{seconds / run['duration_s']:.2f}"]
        for group, seconds in used.items()
        if group != "machine total"
    ]
    others = used["machine busy"] - sum(s for g, s in used.items() if not g.startswith("machine"))
    rows.append(["other processes", f"{others:.1f}", f"{others / run['duration_s']:.2f}"])
    print_table(["CPU in the measured window", "CPU s", "cores"], rows)
    print(f"other processes by name, CPU s: {run['other_processes_cpu_seconds']}")
    lag = run["client_hub_lag_ms"]
    print(
        f"client hub lag (10 ms sleep overshoot): p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f}"
        f" ms, max {lag['max']:.0f} ms"
    )
    depth = [
        (s["rpc_ready"], s["rpc_unacked"])
        for s in run["database_samples"]
        if 0 <= s["time"] <= run["duration_s"] and "rpc_ready" in s
    ]
    if depth:
        print(
            "rpc-media queue during the run: waiting p50"
            f" {statistics.median(d[0] for d in depth):.0f} (max {max(d[0] for d in depth)}),"
            f" being handled p50 {statistics.median(d[1] for d in depth):.0f}"
        )
    print("rabbitmq and postgres are the shared servers: their figures include other users.")
    print(f"bound: {bound_reading(run)}")
    database = run["database"]
    deadline = database["at_deadline"]
    timeline = [
        f"{s['time']:.0f}: {s['processing']}/{s['unpublished_after_10s']}"
        for s in run["database_samples"]
        if 0 <= s["time"] <= run["duration_s"]
    ]
    step = max(1, len(timeline) // 10)
    print(
        "waiting for processing / events unpublished after 10 s, over the run (s: n/n): "
        + ", ".join(timeline[::step])
    )
    print(
        f"at the deadline: media {deadline['media']}, events {deadline['events']}"
        f" ({deadline['unpublished']} unpublished, {deadline['unpublished_after_10s']} of them"
        " older than 10 s)"
    )
    left = database["media"].get("PROCESSING", 0)
    print(
        f"after the load: processing backlog {'drained' if not left else f'still {left}'}"
        f" in {database['drain_s']:.0f} s; media {database['media']}; events"
        f" {database['events']} ({database['unpublished']} unpublished,"
        f" {database['unpublished_after_10s']} older than 10 s)"
    )
    for name, log in run["service_logs"].items():
        print(f"{name} log: {log['tracebacks']} tracebacks, {log['error_lines']} ERROR lines")
        for excerpt in log["first"]:
            print("    " + excerpt.replace("\n", "\n    "))
    print(f"health after the run: {run['health_after']}")


def print_comparison(runs: dict[int, dict[str, Any]]) -> dict[str, float]:
    one, two = runs[1], runs[2]
    rows = []
    ratios = {}
    for method in METHODS:
        a, b = one["methods"][method], two["methods"][method]
        ratio = b["ops_per_s"] / a["ops_per_s"] if a["ops_per_s"] else float("nan")
        ratios[method] = ratio
        rows.append(
            [
                method,
                f"{a['ops_per_s']:.1f}",
                f"{b['ops_per_s']:.1f}",
                f"{ratio:.2f}",
                f"{a['p50_ms']:.1f} / {a['p99_ms']:.1f}",
                f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f}",
            ]
        )
    overall = two["ops_per_s"] / one["ops_per_s"]
    ratios["all"] = overall
    rows.append(["all", f"{one['ops_per_s']:.1f}", f"{two['ops_per_s']:.1f}", f"{overall:.2f}"])
    rows[-1] += ["", ""]
    print("\n== two instances vs one")
    print_table(
        ["method", "1 inst ops/s", "2 inst ops/s", "2/1", "1 inst p50/p99 ms", "2 inst p50/p99 ms"],
        rows,
    )
    met = "MET" if overall >= TARGET_RATIO else "MISSED"
    print(f"throughput two/one = {overall:.2f}: {met} (target >= {TARGET_RATIO:g} where the broker")
    print("is not the bound)")
    for instances, run in runs.items():
        print(f"bound with {instances}: {bound_reading(run)}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="measured seconds per run")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (users)")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds first")
    parser.add_argument(
        "--procs", type=int, default=2, help="client processes the clients are spread over"
    )
    parser.add_argument(
        "--instances",
        default="1,2",
        help="comma-separated instance counts to run, in order (default 1,2)",
    )
    parser.add_argument(
        "--drain", type=float, default=120.0, help="at most this long for processing to catch up"
    )
    parser.add_argument(
        "--code",
        metavar="REVISION",
        help="run the services from this commit (git archive) instead of the work tree",
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    exit_on_sigterm()
    counts = [int(n) for n in args.instances.split(",")]
    runs: dict[int, dict[str, Any]] = {}
    with service_tree(args.code) as (code, code_label):
        print_machine(
            "bench.load: mixed load from sibling clients, one and two media instances",
            {
                "rabbitmq": rabbitmq_version(),
                "postgres": postgres_version(),
                "load": f"{args.clients} clients, {args.duration:g} s (+{args.warmup:g} s"
                f" warm-up) per run, instances {counts}, {args.procs} client process(es)",
                "code": code_label,
            },
        )
        for instances in counts:
            runs[instances] = run_load(instances, args, code)
            print_run(runs[instances])
    ratios = print_comparison(runs) if {1, 2} <= set(runs) else {}
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "nproc": len(os.sched_getaffinity(0)),
                    "code": code_label,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "runs": {str(n): run for n, run in runs.items()},
                    "ratio_two_over_one": ratios,
                },
                indent=1,
            )
        )
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
