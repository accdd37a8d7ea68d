"""tus upload throughput and the service's memory, against a raw streamed write of the same bytes.

The service runs as ``nameko run`` (subprocess, SQLite, local storage). Each round uploads one
file over tus on loopback: ``initiateUpload`` over RPC, then one ``PATCH`` whose body is
streamed from disk in 1 MiB writes (what tus clients do with an unlimited chunk size); the time
runs until the answer to the PATCH, which comes after the file was assembled, verified (sniffing,
sha256) and its record committed.

Baseline, in this process and the same run: the same file read in 1 MiB blocks and written to a
new file on the storage root's filesystem, then ``fsync`` -- the least any durable upload does.
Reported beside it: ``LocalStorage.put`` of the same stream (the backend's own atomic write,
which also hashes).

Memory: the service's resident set is sampled every 5 ms during each upload; the peak growth at
1 GiB is compared with the peak growth at 100 MiB (streaming means it must not grow with size).

Run: ``python -m bench.tus_upload`` (needs about 3 GB free on the temp filesystem).
"""

from __future__ import annotations

import http.client
import os
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

from nameko.standalone.rpc import ClusterRpcProxy

from bench._common import (
    RssSampler,
    exit_on_sigterm,
    media_stack,
    print_machine,
    print_table,
    verdict,
    write_video,
)
from storage import LocalStorage
from tests.integration.conftest import free_port

MiB = 1024 * 1024
SIZES = (100 * MiB, 1024 * MiB)
ROUNDS = 5
BLOCK = MiB
TARGET_THROUGHPUT = 0.5  # tus / raw write
TARGET_MEMORY = 1.2  # peak growth at 1 GiB / at 100 MiB


def raw_write(source: Path, target: Path) -> float:
    started = time.perf_counter()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while block := reader.read(BLOCK):
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def backend_put(source: Path, storage: LocalStorage) -> float:
    def blocks():
        with open(source, "rb") as reader:
            while block := reader.read(BLOCK):
                yield block

    started = time.perf_counter()
    stored = storage.put("media/bench/put", blocks(), "video/mp4")
    elapsed = time.perf_counter() - started
    assert stored.size == source.stat().st_size
    storage.delete("media/bench/put")
    return elapsed


def tus_upload(cluster: ClusterRpcProxy, source: Path) -> float:
    size = source.stat().st_size
    started_session = cluster.media.initiateUpload(
        {"originalName": source.name, "userId": "bench", "size": size}
    )
    headers = {
        "Tus-Resumable": "1.0.0",
        "Authorization": f"Bearer {started_session['uploadToken']}",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
    }
    url = urlsplit(started_session["uploadUrl"])
    started = time.perf_counter()
    # http.client with 1 MiB writes: requests streams a file body in 8 KiB writes, which on
    # this machine costs the client more CPU than the service spends on the same bytes.
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=600, blocksize=BLOCK)
    try:
        with open(source, "rb") as body:
            connection.request(
                "PATCH", url.path, body=body, headers=headers | {"Content-Length": str(size)}
            )
            response = connection.getresponse()
            text = response.read().decode()
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    assert response.status == 204, text
    assert int(response.headers["Upload-Offset"]) == size and response.headers["Media-Id"]
    return elapsed


def clear_storage(root: Path) -> None:
    """Drop what earlier rounds stored, so the disk holds at most one upload at a time."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            path.unlink()


def main() -> None:
    exit_on_sigterm()
    print_machine("bench.tus_upload: tus PATCH into the service vs a raw streamed write")
    port = free_port()
    env = {"WEB_SERVER_ADDRESS": f"127.0.0.1:{port}", "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    with media_stack(env) as stack:
        sources = {size: stack.workdir / f"{size // MiB}.mp4" for size in SIZES}
        for size, path in sources.items():
            write_video(path, size)
        stack.storage_root.mkdir(parents=True, exist_ok=True)
        storage = LocalStorage(stack.storage_root)
        raw: dict[int, list[float]] = {size: [] for size in SIZES}
        put: dict[int, list[float]] = {size: [] for size in SIZES}
        tus: dict[int, list[float]] = {size: [] for size in SIZES}
        growth: dict[int, list[int]] = {size: [] for size in SIZES}
        with ClusterRpcProxy(stack.config, timeout=600) as cluster:
            tus_upload(cluster, sources[SIZES[0]])  # warm up the service and the page cache
            clear_storage(stack.storage_root)
            for round_number in range(ROUNDS):
                for size in SIZES if round_number % 2 == 0 else reversed(SIZES):
                    raw[size].append(raw_write(sources[size], stack.storage_root / "raw"))
                    put[size].append(backend_put(sources[size], storage))
                    with RssSampler(stack.media_pid) as sampler:
                        before = sampler.rss()
                        tus[size].append(tus_upload(cluster, sources[size]))
                    growth[size].append(sampler.peak - before)
                    clear_storage(stack.storage_root)

    rows = []
    for size in SIZES:
        raw_rate = size / statistics.median(raw[size]) / MiB
        put_rate = size / statistics.median(put[size]) / MiB
        tus_rate = size / statistics.median(tus[size]) / MiB
        rows.append(
            [
                f"{size // MiB} MiB",
                f"{raw_rate:.0f}",
                f"{put_rate:.0f}",
                f"{tus_rate:.0f}",
                f"{min(size / t / MiB for t in tus[size]):.0f}-"
                f"{max(size / t / MiB for t in tus[size]):.0f}",
                f"{tus_rate / raw_rate:.2f}",
                f"{statistics.median(growth[size]) / MiB:.1f}",
                f"{max(growth[size]) / MiB:.1f}",
            ]
        )
    print(f"{ROUNDS} interleaved rounds; one PATCH per file, body streamed from disk")
    print_table(
        [
            "file",
            "raw write MiB/s",
            "LocalStorage.put MiB/s",
            "tus MiB/s",
            "tus range",
            "tus/raw",
            "RSS growth p50 MiB",
            "RSS growth max MiB",
        ],
        rows,
    )
    big, small = SIZES[1], SIZES[0]
    # The raw write is paired with the upload that follows it: this disk's write speed drifts
    # within a run by a factor of two, and a pair sees the same disk.
    paired = sorted(r / t for r, t in zip(raw[big], tus[big], strict=True))
    ratio = statistics.median(paired)
    met = "MET" if ratio >= TARGET_THROUGHPUT else "MISSED"
    print(
        f"throughput at 1 GiB: tus/raw write = {ratio:.2f} (median of {ROUNDS} paired rounds; "
        f"{', '.join(f'{value:.2f}' for value in paired)}): {met} (target >= {TARGET_THROUGHPUT})"
    )
    # Growth within a few parts is the floor of what can be told apart from noise.
    floor = 16 * MiB
    memory = max(max(growth[big]), floor) / max(max(growth[small]), floor)
    print(
        f"peak RSS growth 1 GiB vs 100 MiB = {memory:.2f}: {verdict(memory, TARGET_MEMORY)} "
        f"(growth under {floor // MiB} MiB, two parts in flight, counts as {floor // MiB} MiB)"
    )


if __name__ == "__main__":
    main()
