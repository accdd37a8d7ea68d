"""Download throughput of the HTTP file endpoint, and the service's memory while it streams.

A 256 MB file is downloaded through a signed link from the running service (``nameko run``
subprocess, local storage) by a streaming client in this process, against reading the same file
from disk in this process. The service's resident memory is sampled during downloads of a 64 MB
and a 256 MB file: streaming means it must not grow with the file size.

Run: ``python -m bench.download``
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import requests
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
from tests.integration.conftest import free_port

MB = 1024 * 1024
SIZES = (64 * MB, 256 * MB)
ROUNDS = 5
CHUNK = MB
TARGET_THROUGHPUT = 0.5  # endpoint / disk
TARGET_MEMORY = 1.2  # peak growth at 256 MB / at 64 MB


def drop_page_cache() -> bool:
    """Cold reads for both sides, so "disk" means the disk (needs root; skipped otherwise)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3\n")
        return True
    except OSError:
        return False


def read_from_disk(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(CHUNK):
            pass
    return time.perf_counter() - started


def download(url: str, size: int) -> float:
    started = time.perf_counter()
    received = 0
    with requests.get(url, stream=True, timeout=120) as response:
        response.raise_for_status()
        for chunk in response.iter_content(CHUNK):
            received += len(chunk)
    assert received == size, (received, size)
    return time.perf_counter() - started


def main() -> None:
    exit_on_sigterm()
    print_machine("bench.download: HTTP file endpoint vs reading the same file from disk")
    port = free_port()
    env = {"WEB_SERVER_ADDRESS": f"127.0.0.1:{port}", "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    with media_stack(env) as stack:
        urls, paths = {}, {}
        with ClusterRpcProxy(stack.config, timeout=120) as cluster:
            for size in SIZES:
                key = f"media/2026/11/21/{size:032x}"
                paths[size] = stack.storage_root / key
                write_video(paths[size], size)
                record = cluster.media.create(
                    {"storageKey": key, "userId": "bench", "originalName": f"{size // MB}.mp4"}
                )
                urls[size] = cluster.media.getUrl(record["id"], {"expiresIn": 3600})["url"]
        for size in SIZES:  # warm the page cache and the service
            read_from_disk(paths[size])
            download(urls[size], size)

        disk: dict[int, list[float]] = {size: [] for size in SIZES}
        http: dict[int, list[float]] = {size: [] for size in SIZES}
        cold_disk: list[float] = []
        cold_http: list[float] = []
        growth: dict[int, list[int]] = {size: [] for size in SIZES}
        for round_number in range(ROUNDS):
            for size in SIZES if round_number % 2 == 0 else reversed(SIZES):
                disk[size].append(read_from_disk(paths[size]))
                with RssSampler(stack.media_pid) as sampler:
                    before = sampler.rss()
                    http[size].append(download(urls[size], size))
                growth[size].append(sampler.peak - before)
        # Cold rounds last: dropping the cache would make the next warm round partly cold.
        big = SIZES[-1]
        for _ in range(ROUNDS):
            if not drop_page_cache():
                break
            cold_disk.append(read_from_disk(paths[big]))
            drop_page_cache()
            cold_http.append(download(urls[big], big))

    rows = []
    for size in SIZES:
        disk_rate = size / statistics.median(disk[size]) / MB
        http_rate = size / statistics.median(http[size]) / MB
        rows.append(
            [
                f"{size // MB} MB",
                f"{disk_rate:.0f}",
                f"{http_rate:.0f}",
                f"{min(size / t / MB for t in http[size]):.0f}-"
                f"{max(size / t / MB for t in http[size]):.0f}",
                f"{http_rate / disk_rate:.2f}",
                f"{statistics.median(growth[size]) / MB:.1f}",
                f"{max(growth[size]) / MB:.1f}",
            ]
        )
    if cold_disk:
        rows.append(
            [
                f"{SIZES[-1] // MB} MB cold",
                f"{SIZES[-1] / statistics.median(cold_disk) / MB:.0f}",
                f"{SIZES[-1] / statistics.median(cold_http) / MB:.0f}",
                "",
                f"{statistics.median(cold_disk) / statistics.median(cold_http):.2f}",
                "",
                "",
            ]
        )
    print(f"{ROUNDS} interleaved rounds, {CHUNK // MB} MiB reads on both sides")
    print("cold: the page cache is dropped before each side reads (the disk itself)")
    print_table(
        [
            "file",
            "disk MB/s",
            "endpoint MB/s",
            "endpoint range",
            "endpoint/disk",
            "RSS growth p50 MiB",
            "RSS growth max MiB",
        ],
        rows,
    )
    big, small = SIZES[1], SIZES[0]
    for label, disk_times, http_times in (
        ("page cache", disk[big], http[big]),
        ("cold", cold_disk, cold_http),
    ):
        if disk_times:
            ratio = statistics.median(disk_times) / statistics.median(http_times)
            met = "MET" if ratio >= TARGET_THROUGHPUT else "MISSED"
            print(f"throughput at 256 MB, {label}: endpoint/disk = {ratio:.2f}: {met} (>= 0.5)")
    # Growth within a few chunks is the floor of what can be told apart from noise.
    floor = 4 * MB
    memory = max(max(growth[big]), floor) / max(max(growth[small]), floor)
    print(
        f"peak RSS growth 256 MB vs 64 MB = {memory:.2f}: {verdict(memory, TARGET_MEMORY)} "
        f"(growth under {floor // MB} MiB, a few chunks in flight, counts as {floor // MB} MiB)"
    )


if __name__ == "__main__":
    main()
