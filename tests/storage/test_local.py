"""LocalStorage against real files under pytest's tmp_path."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    StorageUnavailable,
    build_storage,
    new_key,
    validate_key,
)

KEY_RE = re.compile(r"media/\d{4}/\d{2}/\d{2}/[0-9a-f]{32}")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> LocalStorage:
    return LocalStorage(root)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def dirs_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir())


# -- keys -------------------------------------------------------------------------------------


def test_new_key_format_and_uniqueness() -> None:
    keys = {new_key() for _ in range(10_000)}
    assert len(keys) == 10_000
    for key in keys:
        assert KEY_RE.fullmatch(key), key
        assert validate_key(key) == key


def test_new_key_uses_the_utc_date_of_now() -> None:
    assert new_key(datetime(2024, 3, 9, 12, tzinfo=UTC)).startswith("media/2024/03/09/")
    late_in_new_york = datetime(2024, 3, 9, 22, tzinfo=timezone(timedelta(hours=-5)))
    assert new_key(late_in_new_york).startswith("media/2024/03/10/")


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "a/../b",
        "/abs",
        "a//b",
        "a\\b",
        "a\x00b",
        "",
        ".",
        "a/./b",
        "a/",
        "a/..",
        "-a",
        "a b",
        "a\n",
        "k" * 513,
    ],
)
def test_validate_key_rejects(key: str) -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key(key)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("invalid key ")


@pytest.mark.parametrize("key", ["a", "A9._-/x", "media/2024/01/02/abc", "k" * 512, "a/.b"])
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


def test_invalid_key_message_says_why() -> None:
    with pytest.raises(InvalidKey, match=re.escape("'..' path segment")):
        validate_key("a/../b")
    with pytest.raises(InvalidKey, match="longer than 512"):
        validate_key("k" * 513)


def test_storage_refuses_an_invalid_key_before_touching_disk(
    store: LocalStorage, root: Path
) -> None:
    with pytest.raises(InvalidKey):
        store.put("../escape", [b"x"], "text/plain")
    with pytest.raises(InvalidKey):
        store.head("a//b")
    with pytest.raises(InvalidKey):
        store.delete("/abs")
    assert not (root.parent / "escape").exists()
    assert files_under(root) == []


def test_keys_with_a_reserved_tmp_segment_are_refused(store: LocalStorage) -> None:
    with pytest.raises(InvalidKey, match="reserved"):
        store.put("media/.tmp-x", [b"x"], "text/plain")


def test_errors_survive_pickling() -> None:
    for error in (
        ObjectNotFound("media/x"),
        InvalidKey("a//b", "has an empty path segment"),
        StorageUnavailable("disk full"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
    assert str(ObjectNotFound("media/x")) == "object 'media/x' not found"


# -- round trip -------------------------------------------------------------------------------


def test_round_trip(store: LocalStorage, root: Path) -> None:
    data = b"hello, media\n" * 1000
    key = new_key()

    stored = store.put(key, [data], "text/plain")

    assert stored.key == key
    assert stored.size == len(data)
    assert stored.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (root / key).read_bytes() == data

    info = store.head(key)
    assert info.key == key
    assert info.size == len(data)
    assert info.content_type is None
    assert info.modified_at.tzinfo is not None
    assert info.modified_at.utcoffset() == timedelta(0)
    assert abs(info.modified_at - datetime.now(UTC)) < timedelta(minutes=1)

    assert store.exists(key)
    assert b"".join(store.iter_chunks(key)) == data
    assert b"".join(store.iter_chunks(key, chunk_size=7)) == data
    assert store.read_head(key, 5) == b"hello"
    assert store.read_head(key, 10 * len(data)) == data

    assert store.delete(key) is True
    assert not store.exists(key)


def test_checksum_format(store: LocalStorage) -> None:
    stored = store.put("a/b", [b""], "application/octet-stream")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", stored.checksum)
    assert stored.checksum == "sha256:" + hashlib.sha256(b"").hexdigest()
    assert stored.size == 0
    assert store.head("a/b").size == 0
    assert list(store.iter_chunks("a/b")) == []


def test_put_from_a_generator_of_many_chunks(store: LocalStorage) -> None:
    pieces = [os.urandom(i % 97 + 1) for i in range(5_000)]

    def produce() -> Iterator[bytes]:
        yield from pieces

    data = b"".join(pieces)
    stored = store.put("gen/many", produce(), "application/octet-stream")

    assert stored.size == len(data)
    assert stored.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert b"".join(store.iter_chunks("gen/many", chunk_size=1000)) == data


def test_put_accepts_bytes_like_chunks(store: LocalStorage) -> None:
    stored = store.put("k", [bytearray(b"ab"), memoryview(b"cd")], "text/plain")
    assert stored.size == 4
    assert store.read_head("k", 10) == b"abcd"


def test_replacing_an_existing_key(store: LocalStorage, root: Path) -> None:
    store.put("x/y", [b"first version, long"], "text/plain")
    stored = store.put("x/y", [b"second"], "text/plain")

    assert stored.size == 6
    assert stored.checksum == "sha256:" + hashlib.sha256(b"second").hexdigest()
    assert store.head("x/y").size == 6
    assert b"".join(store.iter_chunks("x/y")) == b"second"
    assert files_under(root) == ["x/y"]


def test_file_and_directory_modes(store: LocalStorage, root: Path) -> None:
    store.put("d1/d2/f", [b"x"], "text/plain")
    assert stat.S_IMODE((root / "d1/d2/f").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "d1").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "d1/d2").stat().st_mode) == 0o750


def test_root_is_created_with_parents(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "er" / "root"
    store = LocalStorage(str(root))
    assert root.is_dir()
    store.check()


def test_key_clashing_with_a_directory_is_an_invalid_key(store: LocalStorage) -> None:
    store.put("p/child", [b"x"], "text/plain")
    with pytest.raises(InvalidKey):
        store.put("p", [b"y"], "text/plain")
    with pytest.raises(InvalidKey):
        store.put("p/child/grandchild", [b"z"], "text/plain")
    assert b"".join(store.iter_chunks("p/child")) == b"x"
    with pytest.raises(ObjectNotFound):
        store.head("p")
    assert store.delete("p") is False


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
        (10, None, b""),
        (10, 10, b""),
        (8, 100, b"89"),
        (50, None, b""),
    ],
)
def test_ranges(store: LocalStorage, start: int, end: int | None, expected: bytes) -> None:
    store.put("r", [b"0123456789"], "text/plain")
    for chunk_size in (1, 3, 1024):
        got = list(store.iter_chunks("r", start, end, chunk_size=chunk_size))
        assert b"".join(got) == expected
        assert all(0 < len(c) <= chunk_size for c in got)


@pytest.mark.parametrize(("start", "end", "chunk_size"), [(-1, None, 10), (5, 4, 10), (0, None, 0)])
def test_bad_ranges_raise_value_error(
    store: LocalStorage, start: int, end: int | None, chunk_size: int
) -> None:
    store.put("r", [b"0123456789"], "text/plain")
    with pytest.raises(ValueError):
        store.iter_chunks("r", start, end, chunk_size=chunk_size)


def test_read_head_of_zero_bytes(store: LocalStorage) -> None:
    store.put("r", [b"abc"], "text/plain")
    assert store.read_head("r", 0) == b""
    with pytest.raises(ValueError):
        store.read_head("r", -1)


# -- missing objects ---------------------------------------------------------------------------


def test_missing_objects_raise_object_not_found(store: LocalStorage) -> None:
    key = new_key()
    with pytest.raises(ObjectNotFound, match=re.escape(f"object '{key}' not found")):
        store.head(key)
    # Raised by the call itself, so a caller can answer 404 before streaming anything.
    with pytest.raises(ObjectNotFound):
        store.iter_chunks(key)
    with pytest.raises(ObjectNotFound):
        store.read_head(key, 10)
    assert store.exists(key) is False


def test_a_directory_is_not_an_object(store: LocalStorage) -> None:
    store.put("media/2024/01/01/x", [b"x"], "text/plain")
    with pytest.raises(ObjectNotFound):
        store.head("media/2024")
    with pytest.raises(ObjectNotFound):
        store.iter_chunks("media/2024")
    assert store.exists("media/2024") is False


# -- delete -----------------------------------------------------------------------------------


def test_delete_twice_and_prunes_empty_directories(store: LocalStorage, root: Path) -> None:
    key = new_key()
    store.put(key, [b"data"], "text/plain")

    assert store.delete(key) is True
    assert store.delete(key) is False

    assert root.is_dir()
    assert dirs_under(root) == []
    assert files_under(root) == []


def test_delete_keeps_directories_that_still_hold_objects(store: LocalStorage, root: Path) -> None:
    store.put("media/2024/01/01/a", [b"a"], "text/plain")
    store.put("media/2024/01/02/b", [b"b"], "text/plain")

    assert store.delete("media/2024/01/01/a") is True

    assert dirs_under(root) == ["media", "media/2024", "media/2024/01", "media/2024/01/02"]
    assert store.exists("media/2024/01/02/b")


def test_delete_of_a_never_stored_key(store: LocalStorage) -> None:
    assert store.delete("never/stored") is False


# -- listing ----------------------------------------------------------------------------------


def test_iter_objects_lists_exactly_the_stored_keys(store: LocalStorage, root: Path) -> None:
    keys = {new_key() for _ in range(5)} | {"top", "other/x"}
    for i, key in enumerate(sorted(keys)):
        store.put(key, [b"x" * i], "text/plain")
    stray_dir = root / sorted(keys)[0].rpartition("/")[0]
    (stray_dir / ".tmp-x").write_bytes(b"in-flight")
    (root / ".tmp-y").write_bytes(b"in-flight")

    listed = list(store.iter_objects())

    assert {info.key for info in listed} == keys
    assert len(listed) == len(keys)
    for i, key in enumerate(sorted(keys)):
        info = next(info for info in listed if info.key == key)
        assert info.size == i
        assert info.content_type is None
        assert info.modified_at.utcoffset() == timedelta(0)


def test_iter_objects_with_a_prefix(store: LocalStorage) -> None:
    for key in ("media/2024/01/01/a", "media/2024/01/02/b", "media/2024/02/01/c", "other/d"):
        store.put(key, [b"x"], "text/plain")

    def keys(prefix: str) -> set[str]:
        return {info.key for info in store.iter_objects(prefix)}

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
        store.iter_objects("../")


def test_iter_objects_on_an_empty_store(store: LocalStorage) -> None:
    assert list(store.iter_objects()) == []


# -- symlinks ---------------------------------------------------------------------------------


def test_symlink_out_of_root_is_refused(store: LocalStorage, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "filelink").symlink_to(outside / "secret")

    with pytest.raises(InvalidKey, match="outside the storage root"):
        store.head("link/secret")
    with pytest.raises(InvalidKey):
        store.iter_chunks("link/secret")
    with pytest.raises(InvalidKey):
        store.put("link/new", [b"x"], "text/plain")
    with pytest.raises(InvalidKey):
        store.delete("link/secret")
    with pytest.raises(InvalidKey):
        store.head("filelink")

    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"
    # The listing does not follow links either.
    assert list(store.iter_objects()) == []


# -- failures ---------------------------------------------------------------------------------


class ProducerFailed(Exception):
    pass


def test_put_failing_midway_leaves_nothing(store: LocalStorage, root: Path) -> None:
    def produce() -> Iterator[bytes]:
        yield b"a" * 100_000
        yield b"b" * 100_000
        raise ProducerFailed("upload connection dropped")

    key = "media/2024/05/06/" + "f" * 32
    with pytest.raises(ProducerFailed, match="upload connection dropped"):
        store.put(key, produce(), "text/plain")

    assert files_under(root) == []
    assert not store.exists(key)


def test_failed_replace_keeps_the_previous_object(store: LocalStorage, root: Path) -> None:
    store.put("k", [b"old"], "text/plain")

    def produce() -> Iterator[bytes]:
        yield b"new"
        raise ProducerFailed

    with pytest.raises(ProducerFailed):
        store.put("k", produce(), "text/plain")

    assert b"".join(store.iter_chunks("k")) == b"old"
    assert files_under(root) == ["k"]


def test_a_bug_in_the_chunks_propagates_unchanged(store: LocalStorage, root: Path) -> None:
    with pytest.raises(TypeError):
        store.put("k", ["not bytes"], "text/plain")  # type: ignore[list-item]
    assert files_under(root) == []


# -- health -----------------------------------------------------------------------------------


def test_check_passes_on_a_usable_root(store: LocalStorage) -> None:
    store.check()


def test_check_fails_when_the_root_is_replaced_by_a_file(store: LocalStorage, root: Path) -> None:
    root.rmdir()
    root.write_bytes(b"not a directory")
    with pytest.raises(StorageUnavailable, match="not a directory"):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.iter_objects()


def test_missing_root_is_unavailable_and_not_recreated(store: LocalStorage, root: Path) -> None:
    root.rmdir()
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable, match="missing"):
        store.put("a/b", [b"x"], "text/plain")
    assert not root.exists()


def test_root_that_is_a_file_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        LocalStorage(path)


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_puts_and_deletes_in_one_directory(store: LocalStorage) -> None:
    # Deletes prune the shared directory while puts recreate it; no put may fail or be lost.
    errors: list[BaseException] = []
    kept: list[str] = []

    def churn(worker: int) -> None:
        try:
            for i in range(100):
                key = f"media/2024/01/01/w{worker}-{i}"
                store.put(key, [b"x"], "text/plain")
                if i % 10 == 0:
                    kept.append(key)
                else:
                    assert store.delete(key) is True
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert {info.key for info in store.iter_objects()} == set(kept)


# -- factory ----------------------------------------------------------------------------------


def test_build_storage_local(tmp_path: Path) -> None:
    store = build_storage({"STORAGE_ROOT": str(tmp_path / "s")})
    assert isinstance(store, LocalStorage)
    assert store.name == "local"
    store = build_storage({"STORAGE_BACKEND": "local", "STORAGE_ROOT": str(tmp_path / "t")})
    assert isinstance(store, LocalStorage)


def test_build_storage_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'ftp'"):
        build_storage({"STORAGE_BACKEND": "ftp", "STORAGE_ROOT": str(tmp_path)})


def test_build_storage_requires_a_root() -> None:
    with pytest.raises(ValueError, match="STORAGE_ROOT"):
        build_storage({"STORAGE_BACKEND": "local"})
