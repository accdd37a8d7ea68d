"""The contract of :class:`storage.Storage`: every backend in conftest.BACKENDS must pass these.

Backend-specific behaviour (temp files, directories, symlinks, S3 errors and presigning) is
tested in test_<backend>.py.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    PartInfo,
    PresignedReads,
    Storage,
    new_key,
)
from tests.storage.conftest import S3_TEST_PART_SIZE, RawContents

# Backends that keep the content type given to put (the others return None from head).
KEEPS_CONTENT_TYPE = {"s3"}

# Over two S3 test parts (5 MiB each) and not a multiple of anything: three parts, the last short.
LARGE_SIZE = 2 * S3_TEST_PART_SIZE + 1024 * 1024 + 12_345


def read_all(store: Storage, key: str, **kwargs: int) -> bytes:
    return b"".join(store.iter_chunks(key, **kwargs))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def small_chunks(data: bytes, seed: int = 0) -> Iterator[bytes]:
    """``data`` in pieces of irregular small sizes, as an upload arrives from a socket."""
    rng = random.Random(seed)
    offset = 0
    while offset < len(data):
        size = rng.randint(1, 64 * 1024)
        yield data[offset : offset + size]
        offset += size


class ProducerFailed(Exception):
    pass


# -- round trip -------------------------------------------------------------------------------


def test_round_trip(backend: Storage) -> None:
    data = b"hello, media\n" * 1000
    key = new_key()

    stored = backend.put(key, [data], "text/plain")

    assert stored.key == key
    assert stored.size == len(data)
    assert stored.checksum == sha256(data)

    info = backend.head(key)
    assert info.key == key
    assert info.size == len(data)
    assert info.modified_at.tzinfo is not None
    assert info.modified_at.utcoffset() == timedelta(0)
    assert abs(info.modified_at - datetime.now(UTC)) < timedelta(minutes=1)

    assert backend.exists(key)
    assert read_all(backend, key) == data
    assert read_all(backend, key, chunk_size=7) == data
    assert backend.read_head(key, 5) == b"hello"
    assert backend.read_head(key, 10 * len(data)) == data

    assert backend.delete(key) is True
    assert not backend.exists(key)


def test_content_type_is_kept_where_the_backend_keeps_it(backend: Storage) -> None:
    backend.put("typed", [b"{}"], "application/json")
    expected = "application/json" if backend.name in KEEPS_CONTENT_TYPE else None
    assert backend.head("typed").content_type == expected


def test_empty_object(backend: Storage) -> None:
    stored = backend.put("a/b", [b""], "application/octet-stream")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", stored.checksum)
    assert stored.checksum == sha256(b"")
    assert stored.size == 0
    assert backend.head("a/b").size == 0
    assert list(backend.iter_chunks("a/b")) == []
    assert list(backend.iter_chunks("a/b", 0, 10)) == []
    assert backend.read_head("a/b", 10) == b""


def test_put_of_no_chunks_stores_an_empty_object(backend: Storage) -> None:
    stored = backend.put("nothing", iter(()), "application/octet-stream")
    assert (stored.size, stored.checksum) == (0, sha256(b""))
    assert backend.head("nothing").size == 0


def test_put_from_a_generator_of_many_chunks(backend: Storage) -> None:
    pieces = [os.urandom(i % 97 + 1) for i in range(5_000)]

    def produce() -> Iterator[bytes]:
        yield from pieces

    data = b"".join(pieces)
    stored = backend.put("gen/many", produce(), "application/octet-stream")

    assert stored.size == len(data)
    assert stored.checksum == sha256(data)
    assert read_all(backend, "gen/many", chunk_size=1000) == data


def test_put_accepts_bytes_like_chunks(backend: Storage) -> None:
    stored = backend.put("k", [bytearray(b"ab"), memoryview(b"cd"), b""], "text/plain")
    assert stored.size == 4
    assert stored.checksum == sha256(b"abcd")
    assert backend.read_head("k", 10) == b"abcd"


def test_replacing_an_existing_key(backend: Storage, raw_contents: RawContents) -> None:
    backend.put("x/y", [b"first version, long"], "text/plain")
    stored = backend.put("x/y", [b"second"], "text/plain")

    assert stored.size == 6
    assert stored.checksum == sha256(b"second")
    assert backend.head("x/y").size == 6
    assert read_all(backend, "x/y") == b"second"
    assert raw_contents() == ["x/y"]


# -- large objects (multipart on S3) ----------------------------------------------------------


def test_large_object_from_small_chunks(backend: Storage, raw_contents: RawContents) -> None:
    data = random.Random(1).randbytes(LARGE_SIZE)

    stored = backend.put("big/one", small_chunks(data), "application/octet-stream")

    assert stored.size == len(data)
    assert stored.checksum == sha256(data)
    assert backend.head("big/one").size == len(data)
    chunks = list(backend.iter_chunks("big/one", chunk_size=1024 * 1024))
    assert all(0 < len(chunk) <= 1024 * 1024 for chunk in chunks)
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == hashlib.sha256(data).hexdigest()
    # A range across the boundary between the first two parts.
    edge = S3_TEST_PART_SIZE
    across = read_all(backend, "big/one", start=edge - 10, end=edge + 10)
    assert across == data[edge - 10 : edge + 10]
    assert read_all(backend, "big/one", start=len(data) - 3) == data[-3:]
    assert raw_contents() == ["big/one"]


def test_one_huge_chunk_is_split(backend: Storage) -> None:
    data = random.Random(2).randbytes(LARGE_SIZE)
    stored = backend.put("big/huge-chunk", [data], "application/octet-stream")
    assert (stored.size, stored.checksum) == (len(data), sha256(data))
    assert read_all(backend, "big/huge-chunk") == data


@pytest.mark.parametrize("size", [S3_TEST_PART_SIZE, S3_TEST_PART_SIZE + 1])
def test_objects_at_the_part_size_boundary(backend: Storage, size: int) -> None:
    data = random.Random(size).randbytes(size)
    stored = backend.put("edge", small_chunks(data), "application/octet-stream")
    assert (stored.size, stored.checksum) == (size, sha256(data))
    assert read_all(backend, "edge") == data


# -- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, None, b"0123456789"),
        (3, None, b"3456789"),
        (0, 4, b"0123"),
        (2, 5, b"234"),
        (9, 10, b"9"),
        (4, 4, b""),
        (0, 0, b""),
        (10, None, b""),
        (10, 10, b""),
        (8, 100, b"89"),
        (50, None, b""),
        (50, 60, b""),
    ],
)
def test_ranges(backend: Storage, start: int, end: int | None, expected: bytes) -> None:
    backend.put("r", [b"0123456789"], "text/plain")
    for chunk_size in (1, 3, 1024):
        got = list(backend.iter_chunks("r", start, end, chunk_size=chunk_size))
        assert b"".join(got) == expected
        assert all(0 < len(c) <= chunk_size for c in got)


@pytest.mark.parametrize(("start", "end", "chunk_size"), [(-1, None, 10), (5, 4, 10), (0, None, 0)])
def test_bad_ranges_raise_value_error(
    backend: Storage, start: int, end: int | None, chunk_size: int
) -> None:
    backend.put("r", [b"0123456789"], "text/plain")
    with pytest.raises(ValueError):
        backend.iter_chunks("r", start, end, chunk_size=chunk_size)


def test_read_head_of_zero_bytes(backend: Storage) -> None:
    backend.put("r", [b"abc"], "text/plain")
    assert backend.read_head("r", 0) == b""
    with pytest.raises(ValueError):
        backend.read_head("r", -1)


def test_an_iterator_closed_early_or_never_read(backend: Storage) -> None:
    data = os.urandom(100_000)
    backend.put("r", [data], "application/octet-stream")
    for _ in range(20):  # more than a connection pool holds, if closing leaked connections
        chunks = backend.iter_chunks("r", chunk_size=1000)
        assert next(iter(chunks)) == data[:1000]
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        backend.iter_chunks("r")  # dropped without reading
    assert read_all(backend, "r") == data


# -- missing objects ---------------------------------------------------------------------------


def test_missing_objects_raise_object_not_found(backend: Storage) -> None:
    key = new_key()
    with pytest.raises(ObjectNotFound, match=re.escape(f"object '{key}' not found")):
        backend.head(key)
    # Raised by the call itself, so a caller can answer 404 before streaming anything.
    with pytest.raises(ObjectNotFound):
        backend.iter_chunks(key)
    with pytest.raises(ObjectNotFound):
        backend.iter_chunks(key, 5, 10)
    with pytest.raises(ObjectNotFound):
        backend.iter_chunks(key, 3, 3)
    with pytest.raises(ObjectNotFound):
        backend.read_head(key, 10)
    assert backend.exists(key) is False


def test_delete_twice(backend: Storage, raw_contents: RawContents) -> None:
    key = new_key()
    backend.put(key, [b"data"], "text/plain")

    assert backend.delete(key) is True
    assert backend.delete(key) is False

    assert raw_contents() == []


def test_delete_of_a_never_stored_key(backend: Storage) -> None:
    assert backend.delete("never/stored") is False


def test_delete_leaves_other_keys(backend: Storage) -> None:
    backend.put("media/2024/01/01/a", [b"a"], "text/plain")
    backend.put("media/2024/01/02/b", [b"b"], "text/plain")

    assert backend.delete("media/2024/01/01/a") is True

    assert backend.exists("media/2024/01/02/b")
    assert [info.key for info in backend.iter_objects()] == ["media/2024/01/02/b"]


# -- invalid keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../escape", "a//b", "/abs", "a\\b", "", "a/./b", "k" * 513])
def test_invalid_keys_are_refused_by_every_operation(
    backend: Storage, raw_contents: RawContents, key: str
) -> None:
    with pytest.raises(InvalidKey):
        backend.put(key, [b"x"], "text/plain")
    with pytest.raises(InvalidKey):
        backend.head(key)
    with pytest.raises(InvalidKey):
        backend.iter_chunks(key)
    with pytest.raises(InvalidKey):
        backend.read_head(key, 1)
    with pytest.raises(InvalidKey):
        backend.delete(key)
    with pytest.raises(InvalidKey):
        backend.exists(key)
    assert raw_contents() == []


def test_invalid_key_is_refused_before_reading_the_chunks(backend: Storage) -> None:
    consumed = []

    def produce() -> Iterator[bytes]:
        consumed.append(True)
        yield b"x"

    with pytest.raises(InvalidKey):
        backend.put("a//b", produce(), "text/plain")
    assert consumed == []


# -- listing ----------------------------------------------------------------------------------


def test_iter_objects_lists_exactly_the_stored_keys(backend: Storage) -> None:
    keys = {new_key() for _ in range(5)} | {"top", "other/x", "other/x.y", "a-b_c"}
    sizes = {key: i for i, key in enumerate(sorted(keys))}
    for key, size in sizes.items():
        backend.put(key, [b"x" * size], "text/plain")

    listed = list(backend.iter_objects())

    assert sorted(info.key for info in listed) == sorted(keys)
    for info in listed:
        assert info.size == sizes[info.key]
        assert info.content_type in (None, "text/plain")
        assert info.modified_at.utcoffset() == timedelta(0)


def test_iter_objects_with_a_prefix(backend: Storage) -> None:
    for key in ("media/2024/01/01/a", "media/2024/01/02/b", "media/2024/02/01/c", "other/d"):
        backend.put(key, [b"x"], "text/plain")

    def keys(prefix: str) -> set[str]:
        return {info.key for info in backend.iter_objects(prefix)}

    assert keys("") == {"media/2024/01/01/a", "media/2024/01/02/b", "media/2024/02/01/c", "other/d"}
    assert keys("media/2024/01/") == {"media/2024/01/01/a", "media/2024/01/02/b"}
    assert keys("media/2024/0") == {
        "media/2024/01/01/a",
        "media/2024/01/02/b",
        "media/2024/02/01/c",
    }
    assert keys("media/2024/01/01/a") == {"media/2024/01/01/a"}
    assert keys("oth") == {"other/d"}
    assert keys("media/2025/") == set()
    assert keys("other/d/") == set()
    with pytest.raises(InvalidKey):
        backend.iter_objects("../")


def test_iter_objects_on_an_empty_store(backend: Storage) -> None:
    assert list(backend.iter_objects()) == []


def test_iter_objects_never_lists_a_write_in_flight(backend: Storage) -> None:
    seen: list[set[str]] = []

    def produce() -> Iterator[bytes]:
        for chunk in small_chunks(random.Random(3).randbytes(LARGE_SIZE)):
            yield chunk
            if not seen:
                seen.append({info.key for info in backend.iter_objects()})
        seen.append({info.key for info in backend.iter_objects()})

    backend.put("kept", [b"k"], "text/plain")
    backend.put("in-flight", produce(), "application/octet-stream")

    assert seen == [{"kept"}, {"kept"}]
    assert {info.key for info in backend.iter_objects()} == {"kept", "in-flight"}


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("before_failing", [200_000, LARGE_SIZE], ids=["small", "large"])
def test_put_failing_midway_leaves_nothing(
    backend: Storage, raw_contents: RawContents, before_failing: int
) -> None:
    # "large": more than two S3 parts are sent before the producer fails.
    def produce() -> Iterator[bytes]:
        yield from small_chunks(b"a" * before_failing)
        raise ProducerFailed("upload connection dropped")

    key = "media/2024/05/06/" + "f" * 32
    with pytest.raises(ProducerFailed, match="upload connection dropped"):
        backend.put(key, produce(), "text/plain")

    assert not backend.exists(key)
    assert list(backend.iter_objects()) == []
    assert raw_contents() == []  # no temp file, no incomplete multipart upload


@pytest.mark.parametrize("before_failing", [3, LARGE_SIZE], ids=["small", "large"])
def test_failed_replace_keeps_the_previous_object(
    backend: Storage, raw_contents: RawContents, before_failing: int
) -> None:
    backend.put("k", [b"old"], "text/plain")

    def produce() -> Iterator[bytes]:
        yield from small_chunks(b"n" * before_failing)
        raise ProducerFailed

    with pytest.raises(ProducerFailed):
        backend.put("k", produce(), "text/plain")

    assert read_all(backend, "k") == b"old"
    assert raw_contents() == ["k"]


def test_a_bug_in_the_chunks_propagates_unchanged(
    backend: Storage, raw_contents: RawContents
) -> None:
    with pytest.raises(TypeError):
        backend.put("k", ["not bytes"], "text/plain")  # type: ignore[list-item]
    with pytest.raises(TypeError):
        backend.put("k", [b"x" * LARGE_SIZE, "not bytes"], "text/plain")  # type: ignore[list-item]
    assert raw_contents() == []


# -- staged uploads ---------------------------------------------------------------------------

# Every staged part but the last is S3's minimum; the last one is short.
PART = S3_TEST_PART_SIZE


@pytest.fixture(params=[None, PART], ids=["parts", "in-place"])
def staged_part_size(request: pytest.FixtureRequest) -> int | None:
    """Staged uploads with and without the part size (with it, the local backend writes each
    full part at its place in one file and completes by renaming)."""
    return request.param


def split_parts(data: bytes) -> list[bytes]:
    return [data[i : i + PART] for i in range(0, len(data), PART)]


def test_staged_upload_of_parts_in_order(
    staged_part_size: int | None, backend: Storage, raw_contents: RawContents
) -> None:
    data = os.urandom(2 * PART + 12_345)
    key = new_key()

    upload_id = backend.begin_parts(key, "video/mp4", part_size=staged_part_size)
    infos = [
        backend.put_part(key, upload_id, number, chunk)
        for number, chunk in enumerate(split_parts(data), start=1)
    ]
    assert [(info.number, info.size) for info in infos] == [(1, PART), (2, PART), (3, 12_345)]
    assert all(isinstance(info.etag, str) and info.etag for info in infos)
    assert not backend.exists(key)

    stored = backend.complete_parts(key, upload_id, infos)

    assert (stored.key, stored.size, stored.checksum) == (key, len(data), sha256(data))
    assert read_all(backend, key) == data
    info = backend.head(key)
    assert info.size == len(data)
    assert info.content_type == ("video/mp4" if backend.name in KEEPS_CONTENT_TYPE else None)
    assert raw_contents() == [key]  # the staged parts are gone
    # A completed upload is no longer known: aborting it changes nothing.
    backend.abort_parts(key, upload_id)
    assert read_all(backend, key) == data


def test_staged_upload_takes_the_checksum_its_caller_computed(
    backend: Storage, raw_contents: RawContents
) -> None:
    """A caller that hashed the parts as it sent them spares the backend reading the object
    back: with the part size known (how upload sessions stage), the checksum is taken as given."""
    data = os.urandom(2 * PART + 10)
    key = new_key()
    upload_id = backend.begin_parts(key, "video/mp4", part_size=PART)
    infos = [
        backend.put_part(key, upload_id, number, chunk)
        for number, chunk in enumerate(split_parts(data), start=1)
    ]
    given = "sha256:" + "ab" * 32  # not the bytes' hash: shows it was not recomputed
    stored = backend.complete_parts(key, upload_id, infos, checksum=given)
    assert (stored.size, stored.checksum) == (len(data), given)
    assert read_all(backend, key) == data
    assert raw_contents() == [key]


def test_staged_upload_of_one_small_part(
    staged_part_size: int | None, backend: Storage, raw_contents: RawContents
) -> None:
    upload_id = backend.begin_parts("one/part", "text/plain", part_size=staged_part_size)
    part = backend.put_part("one/part", upload_id, 1, b"just this")
    stored = backend.complete_parts("one/part", upload_id, [part])
    assert (stored.size, stored.checksum) == (9, sha256(b"just this"))
    assert read_all(backend, "one/part") == b"just this"
    assert raw_contents() == ["one/part"]


def test_staged_parts_put_out_of_order(
    staged_part_size: int | None, backend: Storage, raw_contents: RawContents
) -> None:
    data = os.urandom(2 * PART + 777)
    chunks = split_parts(data)
    key = new_key()

    upload_id = backend.begin_parts(key, "application/octet-stream", part_size=staged_part_size)
    third = backend.put_part(key, upload_id, 3, chunks[2])
    first = backend.put_part(key, upload_id, 1, chunks[0])
    second = backend.put_part(key, upload_id, 2, chunks[1])
    stored = backend.complete_parts(key, upload_id, [second, third, first])

    assert (stored.size, stored.checksum) == (len(data), sha256(data))
    assert read_all(backend, key) == data
    assert raw_contents() == [key]


def test_a_part_put_twice_is_harmless(
    staged_part_size: int | None, backend: Storage, raw_contents: RawContents
) -> None:
    data = os.urandom(PART + 100)
    chunks = split_parts(data)
    key = new_key()

    upload_id = backend.begin_parts(key, "application/octet-stream", part_size=staged_part_size)
    replaced = backend.put_part(key, upload_id, 1, chunks[0][::-1])  # then retried, right
    first = backend.put_part(key, upload_id, 1, chunks[0])
    second = backend.put_part(key, upload_id, 2, chunks[1])
    assert backend.put_part(key, upload_id, 2, chunks[1]) == second  # a plain retry
    assert replaced.etag != first.etag

    # The replaced part's etag no longer matches what is stored.
    with pytest.raises(ValueError):
        backend.complete_parts(key, upload_id, [replaced, second])
    assert not backend.exists(key)

    stored = backend.complete_parts(key, upload_id, [first, second])
    assert (stored.size, stored.checksum) == (len(data), sha256(data))
    assert read_all(backend, key) == data
    assert raw_contents() == [key]


def test_abort_parts_leaves_nothing(
    staged_part_size: int | None, backend: Storage, raw_contents: RawContents
) -> None:
    data = os.urandom(PART + 10)
    key = new_key()
    upload_id = backend.begin_parts(key, "application/octet-stream", part_size=staged_part_size)
    parts = [
        backend.put_part(key, upload_id, number, chunk)
        for number, chunk in enumerate(split_parts(data), start=1)
    ]
    assert raw_contents() != []  # the staged parts are kept somewhere

    backend.abort_parts(key, upload_id)

    assert raw_contents() == []  # no staged file, no incomplete multipart upload
    assert not backend.exists(key)
    backend.abort_parts(key, upload_id)  # twice is fine
    with pytest.raises(ObjectNotFound):
        backend.put_part(key, upload_id, 1, b"late")
    with pytest.raises(ObjectNotFound):
        backend.complete_parts(key, upload_id, parts)
    assert raw_contents() == []


def test_complete_with_a_missing_part(
    staged_part_size: int | None, backend: Storage, raw_contents: RawContents
) -> None:
    data = os.urandom(2 * PART + 5)
    chunks = split_parts(data)
    key = new_key()
    upload_id = backend.begin_parts(key, "application/octet-stream", part_size=staged_part_size)
    first = backend.put_part(key, upload_id, 1, chunks[0])
    third = backend.put_part(key, upload_id, 3, chunks[2])
    never_put = PartInfo(number=2, size=PART, etag=first.etag)

    with pytest.raises(ValueError):
        backend.complete_parts(key, upload_id, [first, never_put, third])

    assert not backend.exists(key)
    assert list(backend.iter_objects()) == []
    # The upload is left as it was: the missing part can still be put.
    second = backend.put_part(key, upload_id, 2, chunks[1])
    stored = backend.complete_parts(key, upload_id, [first, second, third])
    assert (stored.size, stored.checksum) == (len(data), sha256(data))
    assert raw_contents() == [key]


def test_complete_with_a_wrong_etag(
    staged_part_size: int | None, backend: Storage, raw_contents: RawContents
) -> None:
    chunks = split_parts(os.urandom(PART + 5))
    key = new_key()
    upload_id = backend.begin_parts(key, "application/octet-stream", part_size=staged_part_size)
    first = backend.put_part(key, upload_id, 1, chunks[0])
    second = backend.put_part(key, upload_id, 2, chunks[1])

    with pytest.raises(ValueError):
        backend.complete_parts(key, upload_id, [first, PartInfo(2, second.size, first.etag)])

    assert not backend.exists(key)
    backend.abort_parts(key, upload_id)
    assert raw_contents() == []


def test_bad_part_numbers_and_part_lists(
    staged_part_size: int | None, backend: Storage, raw_contents: RawContents
) -> None:
    upload_id = backend.begin_parts("k", "text/plain", part_size=staged_part_size)
    for number in (0, -1, 10_001):
        with pytest.raises(ValueError):
            backend.put_part("k", upload_id, number, b"x")
    part = backend.put_part("k", upload_id, 1, b"x")
    with pytest.raises(ValueError):
        backend.complete_parts("k", upload_id, [])
    with pytest.raises(ValueError):
        backend.complete_parts("k", upload_id, [part, part])
    with pytest.raises(InvalidKey):
        backend.begin_parts("../escape", "text/plain", part_size=staged_part_size)
    with pytest.raises(InvalidKey):
        backend.put_part("a//b", upload_id, 1, b"x")
    backend.abort_parts("k", upload_id)
    assert raw_contents() == []


@pytest.mark.parametrize("upload_id", [uuid.uuid4().hex, "../../etc", "not-an-id"])
def test_unknown_upload_ids(backend: Storage, raw_contents: RawContents, upload_id: str) -> None:
    key = new_key()
    with pytest.raises(ObjectNotFound):
        backend.put_part(key, upload_id, 1, b"x")
    with pytest.raises(ObjectNotFound):
        backend.complete_parts(key, upload_id, [PartInfo(1, 1, "0" * 64)])
    assert backend.abort_parts(key, upload_id) is None
    assert raw_contents() == []


def test_staged_parts_are_not_listed(staged_part_size: int | None, backend: Storage) -> None:
    backend.put("kept", [b"k"], "text/plain")
    backend.put("replaced", [b"old"], "text/plain")
    upload_id = backend.begin_parts("replaced", "text/plain", part_size=staged_part_size)
    part = backend.put_part("replaced", upload_id, 1, b"new bytes")

    assert {info.key for info in backend.iter_objects()} == {"kept", "replaced"}
    assert read_all(backend, "replaced") == b"old"  # untouched until completed

    backend.complete_parts("replaced", upload_id, [part])
    listed = {info.key: info.size for info in backend.iter_objects()}
    assert listed == {"kept": 1, "replaced": 9}
    assert read_all(backend, "replaced") == b"new bytes"


def test_local_in_place_parts_complete_by_renaming(
    local_backend: LocalStorage, local_root: Path
) -> None:
    data = os.urandom(2 * PART + 10)
    chunks = split_parts(data)
    upload_id = local_backend.begin_parts("media/v", "video/mp4", part_size=PART)
    staging = local_root / f".tmp-upload-{upload_id}"
    infos = [local_backend.put_part("media/v", upload_id, 2, chunks[1])]
    infos.insert(0, local_backend.put_part("media/v", upload_id, 1, chunks[0]))
    infos.append(local_backend.put_part("media/v", upload_id, 3, chunks[2]))
    # Full parts sit at their offsets in one file; their part files hold only the etag.
    assert (staging / "part-00001").read_bytes() == hashlib.sha256(chunks[0]).digest()
    assert (staging / "part-00003").stat().st_size == 32 + 10  # the short last part
    inode = (staging / "data").stat().st_ino
    stored = local_backend.complete_parts("media/v", upload_id, infos)
    assert (stored.size, stored.checksum) == (len(data), sha256(data))
    assert (local_root / "media/v").stat().st_ino == inode  # renamed, not copied
    assert (local_root / "media/v").read_bytes() == data
    assert not staging.exists()


def test_local_in_place_upload_with_odd_parts_is_still_right(local_backend: LocalStorage) -> None:
    """Parts not of the announced size are kept in their own files and copied at the end."""
    odd, rest = os.urandom(PART + 5), os.urandom(PART)
    upload_id = local_backend.begin_parts("media/w", "video/mp4", part_size=PART)
    first = local_backend.put_part("media/w", upload_id, 1, odd)
    second = local_backend.put_part("media/w", upload_id, 2, rest)  # this one in place
    stored = local_backend.complete_parts("media/w", upload_id, [first, second])
    assert (stored.size, stored.checksum) == (len(odd + rest), sha256(odd + rest))
    assert read_all(local_backend, "media/w") == odd + rest


def test_local_staged_upload_layout(local_backend: LocalStorage, local_root: Path) -> None:
    upload_id = local_backend.begin_parts("media/x", "text/plain")
    assert re.fullmatch(r"[0-9a-f]{32}", upload_id)
    part = local_backend.put_part("media/x", upload_id, 7, b"seven")
    staging = local_root / f".tmp-upload-{upload_id}"
    # A part file is its etag (the sha256 of the part), then the part.
    assert (staging / "part-00007").read_bytes() == hashlib.sha256(b"seven").digest() + b"seven"
    assert part == PartInfo(7, 5, hashlib.sha256(b"seven").hexdigest())
    assert not any(p.name.startswith(".tmp-") for p in staging.iterdir())  # no temp files left
    # The id belongs to its key, as on S3.
    with pytest.raises(ObjectNotFound):
        local_backend.put_part("media/y", upload_id, 1, b"x")
    with pytest.raises(ObjectNotFound):
        local_backend.complete_parts("media/y", upload_id, [part])
    local_backend.abort_parts("media/y", upload_id)
    assert staging.is_dir()
    local_backend.complete_parts("media/x", upload_id, [part])
    assert not staging.exists()
    assert (local_root / "media/x").read_bytes() == b"seven"


def test_local_abandoned_staged_uploads_are_removed(
    local_backend: LocalStorage, local_root: Path
) -> None:
    abandoned = local_backend.begin_parts("media/old", "text/plain")
    local_backend.put_part("media/old", abandoned, 1, b"old part")
    fresh = local_backend.begin_parts("media/new", "text/plain")
    fresh_part = local_backend.put_part("media/new", fresh, 1, b"new part")
    # A process that died inside begin_parts: a directory without its key file.
    half_begun = local_root / f".tmp-upload-{uuid.uuid4().hex}"
    half_begun.mkdir()
    old = time.time() - 2 * 86400
    for upload in (local_root / f".tmp-upload-{abandoned}", half_begun):
        for path in [*upload.iterdir(), upload]:
            os.utime(path, (old, old))

    assert local_backend.abort_incomplete_uploads(timedelta(days=1)) == 2

    assert sorted(p.name for p in local_root.iterdir()) == [f".tmp-upload-{fresh}"]
    with pytest.raises(ObjectNotFound):
        local_backend.put_part("media/old", abandoned, 2, b"too late")
    stored = local_backend.complete_parts("media/new", fresh, [fresh_part])
    assert stored.checksum == sha256(b"new part")
    assert local_backend.abort_incomplete_uploads(timedelta(days=1)) == 0


# -- health and URLs ----------------------------------------------------------------------------


def test_check_passes_on_a_usable_backend(backend: Storage) -> None:
    backend.check()


def test_presigned_get_url_is_none_or_serves_the_bytes(backend: Storage) -> None:
    backend.put("p/file.txt", [b"presigned bytes"], "text/plain")
    if not isinstance(backend, PresignedReads):
        return  # this backend cannot presign: the service signs its own URLs
    url = backend.presigned_get_url(
        "p/file.txt", 60, content_type="text/plain", disposition="inline"
    )
    if url is None:
        return  # this backend cannot presign: the service signs its own URLs
    with requests.get(url, timeout=10) as response:
        assert response.status_code == 200
        assert response.content == b"presigned bytes"
