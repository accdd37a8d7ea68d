"""Keyset pagination depth on PostgreSQL: does page 5,000 cost what page 1 costs?

Loads 200,000 media rows into a fresh database (schema by ``alembic upgrade head``), then times
``MediaCatalog.find`` in this process (no RPC) for the first page and for the page after row
100,000 of the same query, interleaved. The deep cursor is made by the service's own
``SortOrder.cursor_after`` from the row one OFFSET query finds at set-up.

Run: ``python -m bench.keyset_depth``
"""

from __future__ import annotations

import io
import json
import random
import statistics
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from bench._common import (
    STAT_HEADERS,
    exit_on_sigterm,
    flat,
    migrate,
    postgres_version,
    print_machine,
    print_table,
    round_ratios,
    run_interleaved,
    stat_cells,
    summarize,
    temp_postgres_database,
    verdict,
)
from schemas import load
from schemas.media import MediaQuerySchema
from services.media.catalog.pagination import SortOrder
from services.media.catalog.records import MediaCatalog
from services.media.core.database import make_engine
from services.media.core.identity import INTERNAL
from services.media.core.models import Media
from services.media.core.settings import MediaSettings
from storage import LocalStorage

ROWS = 200_000
DEPTH = 100_000
LIMIT = 20
WARMUP = 20
ROUNDS = 10
PER_ROUND = 25  # x ROUNDS = 250 timings per case
TARGET = 1.5
# One heavy owner (an import job, say) so a filtered query also has a page 100,000 deep.
HEAVY_USER = "user-000"
HEAVY_SHARE = 0.6
OTHER_USERS = 49
DELETED_SHARE = 0.02

WORDS = ("holiday", "invoice", "avatar", "scan", "receipt", "banner", "photo", "clip", "report")
KINDS = (
    ("IMAGE", "image/jpeg", "jpg"),
    ("IMAGE", "image/png", "png"),
    ("DOCUMENT", "application/pdf", "pdf"),
    ("VIDEO", "video/mp4", "mp4"),
)
COLUMNS = (
    "id, type, status, original_name, mime_type, size, checksum, storage_key, user_id, "
    "entity_type, entity_id, is_public, metadata, width, height, folder, tags, created_at, "
    "updated_at, deleted_at"
)


@dataclass(frozen=True)
class Case:
    label: str
    query: dict[str, Any]  # the wire query, before MediaQuerySchema
    depth: int = DEPTH


CASES = (
    Case("sort=-createdAt", {"sort": "-createdAt"}),
    Case("sort=size", {"sort": "size"}),
    Case("sort=-originalName", {"sort": "-originalName"}),
    Case("userId=heavy (120k rows)", {"sort": "-createdAt", "userId": HEAVY_USER}),
    # A typical owner has ~1,600 rows: the planner picks ix_media_user_created instead.
    Case("userId=typical (1.6k rows)", {"sort": "-createdAt", "userId": "user-007"}, 1_000),
)


def uuid7_at(moment: datetime, rng: random.Random) -> str:
    """A UUIDv7 for a past moment (services.media.core.ids.uuid7 only makes ids for now)."""
    ms = int((moment - datetime(1970, 1, 1)).total_seconds() * 1000)
    value = ms << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def generate_rows(rng: random.Random) -> tuple[io.StringIO, io.StringIO]:
    """COPY text for ``media`` and ``media_tags``: two years of uploads in creation order, as
    an append-mostly table really is laid out."""
    media, tags = io.StringIO(), io.StringIO()
    moment = datetime(2024, 11, 21)
    step = timedelta(days=730) / ROWS
    for number in range(ROWS):
        moment += step * rng.uniform(0.2, 1.8)
        media_id = uuid7_at(moment, rng)
        kind, mime, ext = rng.choice(KINDS)
        user = (
            HEAVY_USER if rng.random() < HEAVY_SHARE else f"user-{rng.randint(1, OTHER_USERS):03d}"
        )
        deleted = rng.random() < DELETED_SHARE
        entity = (rng.choice(("post", "profile")), str(rng.randint(1, 5000)))
        linked = rng.random() < 0.5
        created = moment.isoformat(sep=" ")
        chosen = sorted(rng.sample(WORDS, rng.randint(1, 2))) if number % 3 == 0 else []
        fields = [
            media_id,
            kind,
            "DELETED" if deleted else "READY",
            f"{rng.choice(WORDS)}-{rng.randint(0, 10**6)}.{ext}",
            mime,
            str(int(rng.lognormvariate(12, 1.5))),
            f"sha256:{rng.getrandbits(256):064x}",
            f"media/{moment:%Y/%m/%d}/{uuid.UUID(int=rng.getrandbits(128)).hex}",
            user,
            entity[0] if linked else r"\N",
            entity[1] if linked else r"\N",
            "t" if rng.random() < 0.3 else "f",
            "{}",
            "640" if kind == "IMAGE" else r"\N",
            "480" if kind == "IMAGE" else r"\N",
            r"\N",
            json.dumps(chosen),
            created,
            created,
            created if deleted else r"\N",
        ]
        media.write("\t".join(fields) + "\n")
        for tag in chosen:
            tags.write(f"{media_id}\t{tag}\n")
    media.seek(0)
    tags.seek(0)
    return media, tags


def load_dataset(engine: Engine) -> None:
    rng = random.Random(20261121)
    media, tags = generate_rows(rng)
    pooled = engine.raw_connection()
    connection = pooled.dbapi_connection  # psycopg2's own: copy_expert and autocommit
    try:
        with connection.cursor() as cursor:
            cursor.copy_expert(f"COPY media ({COLUMNS}) FROM STDIN", media)
            cursor.copy_expert("COPY media_tags (media_id, tag) FROM STDIN", tags)
        connection.commit()
        connection.autocommit = True  # VACUUM cannot run in a transaction
        try:
            with connection.cursor() as cursor:
                # Fresh statistics and visibility map, as autovacuum leaves a settled table.
                cursor.execute("VACUUM ANALYZE media")
                cursor.execute("VACUUM ANALYZE media_tags")
        finally:
            connection.autocommit = False
    finally:
        pooled.close()


def deep_cursor(sessions: sessionmaker, query: dict[str, Any], depth: int) -> tuple[str, str]:
    """The cursor after row ``depth`` of the query, and the id the deep page must start with.

    The conditions mirror what ``MediaCatalog.find`` applies for an internal caller.
    """
    order = SortOrder.parse(query["sort"])
    conditions = [Media.deleted_at.is_(None)]
    if "user_id" in query:
        conditions.append(Media.user_id == query["user_id"])
    statement = order.apply(select(Media).where(*conditions), None).offset(depth - 1).limit(2)
    with sessions() as session:
        last_of_previous, first_of_deep = session.scalars(statement).all()
        return order.cursor_after(last_of_previous), first_of_deep.id


def explain(engine: Engine, query: dict[str, Any]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the page query ``find`` sends for ``query``."""
    order = SortOrder.parse(query["sort"])
    conditions = [Media.deleted_at.is_(None)]
    if "user_id" in query:
        conditions.append(Media.user_id == query["user_id"])
    statement = order.apply(select(Media).where(*conditions), query.get("cursor"))
    compiled = statement.limit(query["limit"] + 1).compile(dialect=engine.dialect)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), compiled.params
        ).all()
    return "\n".join("    " + row[0] for row in rows)


def main() -> None:
    exit_on_sigterm()
    print_machine(
        "bench.keyset_depth: MediaCatalog.find, first page vs a page deep in the same query",
        {"postgres": postgres_version(), "rows": f"{ROWS:,} media (one user owns ~60%)"},
    )
    with temp_postgres_database() as url, tempfile.TemporaryDirectory() as storage_root:
        migrate(url)
        engine = make_engine(url)
        try:
            load_dataset(engine)
            sessions = sessionmaker(engine, expire_on_commit=False)
            catalog = MediaCatalog(
                sessions=sessions,
                storage=LocalStorage(storage_root),
                settings=MediaSettings(public_base_url="http://x", url_signing_key=b"k"),
            )
            calls = {}
            plans = {}
            for case in CASES:
                first = load(MediaQuerySchema(), {**case.query, "limit": LIMIT}, argument="query")
                cursor, expected_id = deep_cursor(sessions, first, case.depth)
                deep = {**first, "cursor": cursor}
                # Guard against timing a wrong page: the deep page starts right after the cursor.
                page = catalog.find(INTERNAL, deep)
                if page.items[0].id != expected_id or len(page.items) != LIMIT:
                    raise RuntimeError(f"{case.label}: the deep page is not the expected one")
                calls[f"{case.label} | first"] = lambda q=first: catalog.find(INTERNAL, q)
                calls[f"{case.label} | deep"] = lambda q=deep: catalog.find(INTERNAL, q)
                plans[case.label] = explain(engine, deep)
            run_interleaved(calls, rounds=1, per_round=WARMUP)
            samples = run_interleaved(calls, rounds=ROUNDS, per_round=PER_ROUND)
        finally:
            engine.dispose()

    rows = []
    for case in CASES:
        for page in ("first", "deep"):
            name = f"{case.label} | {page}"
            rows.append([name, *stat_cells(summarize(flat(samples[name])))])
    print(
        f"find(limit={LIMIT}) timed in process; {ROUNDS} interleaved rounds x {PER_ROUND} "
        "calls per case; deep = the page after row <depth> of the same query"
    )
    print_table(["case | page", *STAT_HEADERS], rows)

    ratio_rows = []
    for case in CASES:
        deep, first = f"{case.label} | deep", f"{case.label} | first"
        ratio = statistics.median(flat(samples[deep])) / statistics.median(flat(samples[first]))
        per_round = round_ratios(samples, deep, first)
        target = verdict(ratio, TARGET) if case is CASES[0] else "(no target)"
        ratio_rows.append(
            [
                case.label,
                f"{case.depth:,}",
                f"{ratio:.2f}",
                f"{min(per_round):.2f}-{max(per_round):.2f}",
                target,
            ]
        )
    print_table(["query", "depth", "deep/first p50", "per-round", "target"], ratio_rows)
    for label, plan in plans.items():
        print(f"EXPLAIN (ANALYZE, BUFFERS) of the deep page query, {label}:")
        print(plan)


if __name__ == "__main__":
    main()
