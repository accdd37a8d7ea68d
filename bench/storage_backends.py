"""Storage backends side by side: ``put`` and a full read of 1 MB and 32 MB objects.

LocalStorage writes to a temp directory (temp file, fsync, rename, fsync of the directory).
S3Storage talks to a moto server (``moto_server``, a subprocess on loopback) through boto3,
with its default 8 MiB parts: a 1 MB put is one PutObject, a 32 MB put is a multipart upload
of 4 parts. A get is ``iter_chunks`` read to the end (1 MiB chunks). For reference, "boto3"
is a bare ``put_object``/``get_object().read()`` of the whole object on the same server.

Each put sends the bytes in 64 KiB chunks, as an upload stream arrives; the same key is
replaced every time. Cases are interleaved, reversing order every other round.

moto is an in-memory Python server: the s3/local ratio mostly measures moto (and HTTP on
loopback), not AWS S3 or MinIO, whose latency and throughput depend on the network.

Run: ``python -m bench.storage_backends``
"""

from __future__ import annotations

import random
import statistics
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from bench._common import (
    STAT_HEADERS,
    exit_on_sigterm,
    flat,
    package_versions,
    print_machine,
    print_table,
    round_ratios,
    run_interleaved,
    stat_cells,
    summarize,
)
from storage import LocalStorage, Storage
from tests.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer

SIZES = {"1MB": 1024 * 1024, "32MB": 32 * 1024 * 1024}
# Calls per case and round: about the same wall time for both sizes.
PER_ROUND = {"1MB": 8, "32MB": 2}
ROUNDS = 20
WARMUP_ROUNDS = 1
STREAM_CHUNK = 64 * 1024
# "boto3": plain put_object/get_object of the whole object on the same moto server, without
# S3Storage (no hashing, no parts): what the adapter itself adds.
BACKENDS = ("local", "s3", "boto3")


def chunks(data: bytes) -> Iterator[memoryview]:
    """``data`` in upload-sized pieces, without copying it."""
    view = memoryview(data)
    for offset in range(0, len(view), STREAM_CHUNK):
        yield view[offset : offset + STREAM_CHUNK]


def put_case(store: Storage, key: str, data: bytes) -> Callable[[], object]:
    return lambda: store.put(key, chunks(data), "application/octet-stream")


def get_case(store: Storage, key: str, size: int) -> Callable[[], object]:
    def get() -> int:
        total = sum(len(chunk) for chunk in store.iter_chunks(key))
        if total != size:  # guard against timing a wrong object
            raise RuntimeError(f"{store.name}: read {total} bytes of {key}, expected {size}")
        return total

    return get


def raw_put_case(client: Any, bucket: str, key: str, data: bytes) -> Callable[[], object]:
    return lambda: client.put_object(Bucket=bucket, Key=key, Body=data)


def raw_get_case(client: Any, bucket: str, key: str) -> Callable[[], object]:
    return lambda: len(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def main() -> None:
    exit_on_sigterm()
    # Imported here, after bench._common (which imports the service, as every benchmark does);
    # no eventlet monkey patch is applied in this process, so boto3 needs no special order.
    import boto3

    from storage.s3 import S3Storage

    versions = package_versions(("boto3", "botocore", "moto"))
    print_machine(
        "bench.storage_backends: put and full get, LocalStorage vs S3Storage on moto",
        {"s3": "moto_server on 127.0.0.1; " + ", ".join(f"{k} {v}" for k, v in versions.items())},
    )
    payloads = {label: random.Random(size).randbytes(size) for label, size in SIZES.items()}

    with tempfile.TemporaryDirectory(prefix="bench-storage-") as root, MotoServer() as server:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        s3 = S3Storage(
            bucket,
            endpoint_url=server.endpoint_url,
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
        )
        admin = boto3.session.Session().client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        try:
            admin.create_bucket(Bucket=bucket)
            stores: dict[str, Storage] = {"local": LocalStorage(root), "s3": s3}
            samples = {}
            for label, data in payloads.items():
                cases: dict[str, Callable[[], object]] = {}
                for name, store in stores.items():
                    store.put(f"get/{label}", chunks(data), "application/octet-stream")
                    cases[f"{name} put {label}"] = put_case(store, f"put/{label}", data)
                    cases[f"{name} get {label}"] = get_case(store, f"get/{label}", len(data))
                cases[f"boto3 put {label}"] = raw_put_case(admin, bucket, f"raw/{label}", data)
                cases[f"boto3 get {label}"] = raw_get_case(admin, bucket, f"get/{label}")
                run_interleaved(cases, rounds=WARMUP_ROUNDS, per_round=PER_ROUND[label])
                samples.update(run_interleaved(cases, rounds=ROUNDS, per_round=PER_ROUND[label]))
        finally:
            s3.close()
            admin.close()

    rows = []
    for label, size in SIZES.items():
        for operation in ("put", "get"):
            base = f"local {operation} {label}"
            for name in BACKENDS:
                case = f"{name} {operation} {label}"
                median = statistics.median(flat(samples[case]))
                if name == "local":
                    ratio, spread = "1.00", "-"
                else:
                    per_round = round_ratios(samples, case, base)
                    ratio = f"{median / statistics.median(flat(samples[base])):.2f}"
                    spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
                rows.append(
                    [
                        case,
                        *stat_cells(summarize(flat(samples[case]))),
                        f"{size / median / 1e6:.0f}",
                        ratio,
                        spread,
                    ]
                )
    print(
        f"{ROUNDS} interleaved rounds x {PER_ROUND['1MB']} calls (1MB) / "
        f"{PER_ROUND['32MB']} calls (32MB) per case, after {WARMUP_ROUNDS} warm-up round; "
        f"puts stream {STREAM_CHUNK // 1024} KiB chunks; S3 part size {s3.part_size // 2**20} MiB"
    )
    print_table(["case", *STAT_HEADERS, "MB/s", "/local", "per-round"], rows)
    print("moto is an in-memory Python server: s3/local measures moto on loopback, not S3.")


if __name__ == "__main__":
    main()
