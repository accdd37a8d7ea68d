"""Ingest cost of ``upload_file`` for 1 MB and 8 MB images, against writing the bytes yourself.

Baseline: in this process, ``base64.b64decode`` of the same string, write to a temp file on the
filesystem of STORAGE_ROOT, ``flush`` and ``fsync`` -- the least any durable upload must do.

Measured, interleaved:
* rpc: ``media.upload_file`` through a ``ClusterRpcProxy`` to the service subprocess, as a
  sibling calls it (no idempotencyKey, so every call is a new upload);
* in-process: the handler's body (schema load, ``MediaCatalog.upload_file``, ``present``) on a
  real SQLite file and ``LocalStorage``, without RPC;
* noop.sink: the same argument sent to a no-op service, i.e. the bare RPC transport.

Then a breakdown: the in-process uploads split by MediaCatalog's own ``offload`` hook, plus
the JSON and base64 work timed alone.

Run: ``python -m bench.ingest``
"""

from __future__ import annotations

import base64
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kombu.utils import json as kombu_json
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy.orm import sessionmaker

from bench._common import (
    STAT_HEADERS,
    Rounds,
    b64,
    exit_on_sigterm,
    flat,
    media_stack,
    migrate,
    ms,
    png_bytes,
    print_machine,
    print_table,
    rabbitmq_version,
    round_ratios,
    run_interleaved,
    service_config,
    stat_cells,
    summarize,
    verdict,
)
from schemas import load
from schemas.media import UploadFileSchema
from services.media.catalog.records import MediaCatalog
from services.media.core.database import make_engine
from services.media.core.identity import INTERNAL
from services.media.core.settings import MediaSettings
from services.media.ingest.policy import decode_and_check, sniff_payload
from storage import LocalStorage

SIZES = {"1MB": 1024 * 1024, "8MB": 8 * 1024 * 1024}
ROUNDS = 30
WARMUP_ROUNDS = 2
ALONE_RUNS = 15
TARGET = {"8MB": 2.0}  # upload_file over RPC / baseline


def request(encoded: str, label: str) -> dict[str, Any]:
    return {"userId": "bench-user", "originalName": f"noise-{label}.png", "content": encoded}


def baseline(encoded: str, directory: Path) -> None:
    """The floor: decode, write, make it durable."""
    data = base64.b64decode(encoded)
    fd, _path = tempfile.mkstemp(dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class TimedOffload:
    """MediaCatalog's ``offload`` hook, timing what it is handed (decode_and_check, put).

    The service's hook runs these in eventlet's thread pool; here they run inline, so the
    timings split the very uploads measured rather than separate re-runs.
    """

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def __call__(self, function: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            name = getattr(function, "__name__", repr(function))
            self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - start


def alone(function: Callable[[], object]) -> float:
    """Median of ``ALONE_RUNS`` calls of ``function`` by itself."""
    samples = run_interleaved({"piece": function}, rounds=1, per_round=ALONE_RUNS)
    return statistics.median(flat(samples["piece"]))


def pieces_alone(encoded: str, label: str, settings: MediaSettings) -> dict[str, float]:
    """JSON work of both RPC ends, and the parts of decode_and_check, each timed alone."""
    wire = kombu_json.dumps({"args": [request(encoded, label)], "kwargs": {}})
    sniffed = sniff_payload(encoded, None, settings)
    data = decode_and_check(encoded, sniffed).data
    return {
        "client json-encodes the request": alone(lambda: kombu_json.dumps(request(encoded, label))),
        "service json-decodes it": alone(lambda: kombu_json.loads(wire)),
        "base64 decode, validate=True": alone(lambda: base64.b64decode(encoded, validate=True)),
        "sha256 of the bytes": alone(lambda: hashlib.sha256(data).hexdigest()),
    }


def main() -> None:
    exit_on_sigterm()
    print_machine(
        "bench.ingest: upload_file vs base64-decode + write + fsync",
        {"rabbitmq": rabbitmq_version(), "media db": "SQLite (temp file, WAL)"},
    )
    payloads = {label: b64(png_bytes(size, seed=size)) for label, size in SIZES.items()}
    file_sizes = {label: len(base64.b64decode(text)) for label, text in payloads.items()}
    steps: dict[str, list[dict[str, float]]] = {label: [] for label in payloads}

    with media_stack() as stack:
        # Same filesystem as the service's STORAGE_ROOT, as the baseline requires.
        baseline_dir = stack.workdir / "baseline"
        baseline_dir.mkdir()
        domain_url = f"sqlite:///{stack.workdir / 'in-process.db'}"
        migrate(domain_url)
        # config.yml's upload policy, as the service loads it.
        settings = MediaSettings.from_config(service_config({"URL_SIGNING_KEY": stack.signing_key}))
        engine = make_engine(domain_url)
        offload = TimedOffload()
        try:
            catalog = MediaCatalog(
                sessions=sessionmaker(engine, expire_on_commit=False),
                storage=LocalStorage(stack.workdir / "in-process-storage"),
                settings=settings,
                offload=offload,
            )

            def in_process(encoded: str, label: str) -> object:
                """What the upload_file handler runs, minus nameko."""
                offload.current = {}
                start = time.perf_counter()
                data = load(UploadFileSchema(), request(encoded, label))
                result = catalog.present(catalog.upload_file(INTERNAL, data))
                steps[label].append({**offload.current, "total": time.perf_counter() - start})
                return result

            with ClusterRpcProxy(stack.config, timeout=60) as cluster:
                cases: dict[str, Callable[[], object]] = {}
                for label, encoded in payloads.items():
                    cases[f"{label} baseline"] = lambda e=encoded: baseline(e, baseline_dir)
                    cases[f"{label} noop.sink"] = lambda e=encoded: cluster.bench_noop.sink(e)
                    cases[f"{label} in-process"] = lambda e=encoded, n=label: in_process(e, n)
                    cases[f"{label} rpc"] = lambda e=encoded, n=label: cluster.media.upload_file(
                        request(e, n)
                    )
                run_interleaved(cases, rounds=WARMUP_ROUNDS, per_round=1)
                for label in steps:
                    steps[label].clear()  # keep the measured rounds only
                samples = run_interleaved(cases, rounds=ROUNDS, per_round=1)
            pieces = {
                label: pieces_alone(text, label, settings) for label, text in payloads.items()
            }
        finally:
            engine.dispose()

    report(samples, steps, pieces, file_sizes)


def report(
    samples: Rounds,
    steps: dict[str, list[dict[str, float]]],
    pieces: dict[str, dict[str, float]],
    file_sizes: dict[str, int],
) -> None:
    rows = []
    for name, rounds in samples.items():
        label = name.split()[0]
        base = f"{label} baseline"
        ratio = statistics.median(flat(rounds)) / statistics.median(flat(samples[base]))
        per_round = round_ratios(samples, name, base)
        rows.append(
            [
                name,
                *stat_cells(summarize(flat(rounds))),
                f"{ratio:.2f}",
                f"{min(per_round):.2f}-{max(per_round):.2f}",
            ]
        )
    sizes = ", ".join(f"{label} = {size:,} bytes" for label, size in file_sizes.items())
    print(f"PNG of random pixels ({sizes}); {ROUNDS} interleaved rounds, 1 call per case each")
    print_table(["case", *STAT_HEADERS, "/baseline", "per-round"], rows)

    for label, target in TARGET.items():
        rpc = statistics.median(flat(samples[f"{label} rpc"]))
        ratio = rpc / statistics.median(flat(samples[f"{label} baseline"]))
        print(f"upload_file over RPC at {label}: {ratio:.2f}x baseline: {verdict(ratio, target)}")
    print()

    for label in steps:
        median = {
            kind: statistics.median(flat(samples[f"{label} {kind}"]))
            for kind in ("baseline", "noop.sink", "in-process", "rpc")
        }

        def step(name: str, calls: list[dict[str, float]] = steps[label]) -> float:
            return statistics.median(call.get(name, 0.0) for call in calls)

        rest = statistics.median(
            call["total"] - call.get("decode_and_check", 0.0) - call.get("put", 0.0)
            for call in steps[label]
        )
        alone_ = pieces[label]
        print(f"breakdown at {label} (medians, ms):")
        table = [
            ["baseline: b64decode + write + fsync", median["baseline"]],
            ["noop.sink: the same argument to a no-op service", median["noop.sink"]],
            [
                "  client json-encodes the request (alone)",
                alone_["client json-encodes the request"],
            ],
            ["  service json-decodes it (alone)", alone_["service json-decodes it"]],
            ["in-process handler body", median["in-process"]],
            ["  decode_and_check (during the uploads)", step("decode_and_check")],
            ["    base64 decode, validate=True (alone)", alone_["base64 decode, validate=True"]],
            ["    sha256 (alone)", alone_["sha256 of the bytes"]],
            ["  storage.put: write, sha256 again, fsync file + dir", step("put")],
            ["  the rest: schema, sniff, SQLite insert + outbox, present", rest],
            ["upload_file over RPC", median["rpc"]],
            [
                "  rpc - noop.sink - in-process (eventlet, tpool, event publish)",
                median["rpc"] - median["noop.sink"] - median["in-process"],
            ],
        ]
        print_table(["piece", "ms"], [[name, ms(seconds)] for name, seconds in table])


if __name__ == "__main__":
    main()
