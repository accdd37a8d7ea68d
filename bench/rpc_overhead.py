"""RPC overhead of the media service's reads, against a no-op nameko service in the same vhost.

Both services run as ``nameko run`` subprocesses and the client is a standalone
``ClusterRpcProxy`` in this process, exactly as a sibling service would call them. The ratio
findOne/noop says what the media service adds on top of the bare round trip.

Run: ``python -m bench.rpc_overhead``
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy.orm import sessionmaker

from bench._common import (
    STAT_HEADERS,
    Rounds,
    Stack,
    b64,
    exit_on_sigterm,
    flat,
    media_stack,
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
from schemas.media import MediaQuerySchema
from services.media.catalog.records import MediaCatalog
from services.media.core.database import make_engine
from services.media.core.identity import INTERNAL
from services.media.core.settings import MediaSettings
from storage import LocalStorage

SEED_MEDIA = 200
WARMUP = 200
ROUNDS = 10
PER_ROUND = 200
TARGETS = {"findOne": 1.5, "findAll": 2.0}


def seed(media: Any) -> list[str]:
    """Upload ``SEED_MEDIA`` tiny PNGs over RPC and wait until processing made their variants
    (so records are as callers see them, and no processing competes with the measurement);
    returns their ids."""
    ids = [
        media.upload_file(
            {
                "userId": f"user-{number % 5}",
                "originalName": f"seed-{number}.png",
                "content": b64(png_bytes(64, seed=number)),
                "tags": ["bench"] if number % 3 == 0 else [],
            }
        )["id"]
        for number in range(SEED_MEDIA)
    ]
    deadline = time.monotonic() + 300
    while media.findAll({"status": "PROCESSING", "withTotal": True, "limit": 1})["total"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the seeded media were not processed within 5 minutes")
        time.sleep(0.5)
    return ids


def handler_bodies(stack: Stack, ids: list[str]) -> Rounds:
    """The same reads through the domain in this process (no RPC, no eventlet), on the service's
    own SQLite file: roughly what the service spends inside each handler."""
    config = service_config(
        {"URL_SIGNING_KEY": stack.signing_key, "DATABASE_URL": stack.database_url}
    )
    engine = make_engine(stack.database_url)
    catalog = MediaCatalog(
        sessions=sessionmaker(engine, expire_on_commit=False),
        storage=LocalStorage(stack.storage_root),
        settings=MediaSettings.from_config(config),
    )
    next_id = itertools.cycle(ids).__next__

    def find_one() -> object:
        return catalog.present(catalog.find_one(INTERNAL, next_id()))

    def find_all() -> object:
        page = catalog.find(INTERNAL, load(MediaQuerySchema(), {"limit": 20}, argument="query"))
        return [catalog.present(media) for media in page.items], page.next_cursor

    try:
        cases = {"findOne (in-process)": find_one, "findAll (in-process)": find_all}
        run_interleaved(cases, rounds=1, per_round=WARMUP)
        return run_interleaved(cases, rounds=ROUNDS // 2, per_round=PER_ROUND)
    finally:
        engine.dispose()


def main() -> None:
    exit_on_sigterm()
    print_machine(
        "bench.rpc_overhead: sequential RPC round trips, media vs a no-op service",
        {"rabbitmq": rabbitmq_version(), "media db": "SQLite (temp file, WAL)"},
    )
    with media_stack() as stack:
        with ClusterRpcProxy(stack.config, timeout=10) as cluster:
            ids = seed(cluster.media)
            next_id = itertools.cycle(ids).__next__
            # A no-op that answers with a real findAll page: what moving those bytes costs.
            cluster.bench_noop.remember(cluster.media.findAll({"limit": 20}))
            cases = {
                "noop.ping": lambda: cluster.bench_noop.ping(),
                "noop.recall (page)": lambda: cluster.bench_noop.recall(),
                "media.findOne": lambda: cluster.media.findOne(next_id()),
                "media.findAll": lambda: cluster.media.findAll({"limit": 20}),
            }
            run_interleaved(cases, rounds=1, per_round=WARMUP)
            samples = run_interleaved(cases, rounds=ROUNDS, per_round=PER_ROUND)
        inside = handler_bodies(stack, ids)

    noop = statistics.median(flat(samples["noop.ping"]))
    rows = []
    for name, rounds in samples.items():
        per_round = round_ratios(samples, name, "noop.ping")
        rows.append(
            [
                name,
                *stat_cells(summarize(flat(rounds))),
                f"{statistics.median(flat(rounds)) / noop:.2f}",
                f"{min(per_round):.2f}-{max(per_round):.2f}",
            ]
        )
    for name, rounds in inside.items():
        rows.append([name, *stat_cells(summarize(flat(rounds))), "-", "-"])
    print(f"{ROUNDS} interleaved rounds x {PER_ROUND} calls per method, after {WARMUP} warm-up")
    print_table(["case", *STAT_HEADERS, "p50/noop", "per-round"], rows)

    for method, target in TARGETS.items():
        ratio = statistics.median(flat(samples[f"media.{method}"])) / noop
        print(f"{method}/noop = {ratio:.2f}: {verdict(ratio, target)}")
    for method in TARGETS:
        rpc = statistics.median(flat(samples[f"media.{method}"]))
        body = statistics.median(flat(inside[f"{method} (in-process)"]))
        print(
            f"{method}: p50 {ms(rpc)} ms = noop round trip {ms(noop)} + handler body {ms(body)}"
            f" + rest {ms(rpc - noop - body)} (nameko worker, bigger reply, CPU shared with"
            " the broker and this client)"
        )


if __name__ == "__main__":
    main()
