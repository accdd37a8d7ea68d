"""LocalStorage against real files under pytest's tmp_path: what only a filesystem backend has
(temp files, directories, modes, symlinks, the root). The shared contract is in
test_backends.py."""

from __future__ import annotations

import os
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from storage import (
    DirectUploads,
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    PresignedReads,
    StorageUnavailable,
    build_storage,
    new_key,
)


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


# -- layout -----------------------------------------------------------------------------------


def test_an_object_is_a_file_at_its_key(store: LocalStorage, root: Path) -> None:
    store.put("media/2024/01/01/a", [b"hello"], "text/plain")
    assert (root / "media/2024/01/01/a").read_bytes() == b"hello"
    assert store.head("media/2024/01/01/a").content_type is None  # bytes only
    assert files_under(root) == ["media/2024/01/01/a"]


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


def test_a_directory_is_not_an_object(store: LocalStorage) -> None:
    store.put("media/2024/01/01/x", [b"x"], "text/plain")
    with pytest.raises(ObjectNotFound):
        store.head("media/2024")
    with pytest.raises(ObjectNotFound):
        store.iter_chunks("media/2024")
    assert store.exists("media/2024") is False


# -- delete -----------------------------------------------------------------------------------


def test_delete_prunes_empty_directories(store: LocalStorage, root: Path) -> None:
    key = new_key()
    store.put(key, [b"data"], "text/plain")

    assert store.delete(key) is True

    assert root.is_dir()
    assert dirs_under(root) == []
    assert files_under(root) == []


def test_delete_keeps_directories_that_still_hold_objects(store: LocalStorage, root: Path) -> None:
    store.put("media/2024/01/01/a", [b"a"], "text/plain")
    store.put("media/2024/01/02/b", [b"b"], "text/plain")

    assert store.delete("media/2024/01/01/a") is True

    assert dirs_under(root) == ["media", "media/2024", "media/2024/01", "media/2024/01/02"]
    assert store.exists("media/2024/01/02/b")


# -- listing ----------------------------------------------------------------------------------


def test_iter_objects_skips_temp_files_and_unaddressable_files(
    store: LocalStorage, root: Path
) -> None:
    keys = {new_key() for _ in range(3)} | {"top"}
    for key in keys:
        store.put(key, [b"x"], "text/plain")
    stray_dir = root / sorted(keys)[0].rpartition("/")[0]
    (stray_dir / ".tmp-x").write_bytes(b"in-flight")
    (root / ".tmp-y").write_bytes(b"in-flight")
    (root / "has space").write_bytes(b"placed by hand")

    assert {info.key for info in store.iter_objects()} == keys


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


# -- health -----------------------------------------------------------------------------------


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


def test_local_storage_has_no_presigned_reads_or_direct_uploads(store: LocalStorage) -> None:
    # The service then signs links to its own endpoint and takes every byte itself.
    assert not isinstance(store, PresignedReads)
    assert not isinstance(store, DirectUploads)


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


def test_temp_files_of_writes_that_died_are_removed_after_a_while(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    store.put("media/a/kept", [b"x"], "text/plain")
    folder = tmp_path / "store" / "media" / "a"
    dead = folder / ".tmp-dead"
    live = folder / ".tmp-live"
    dead.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    old = time.time() - 2 * 86400
    os.utime(dead, (old, old))
    assert store.abort_incomplete_uploads(timedelta(days=1)) == 1
    assert not dead.exists() and live.exists()
    assert [info.key for info in store.iter_objects()] == ["media/a/kept"]


def test_local_path_is_the_objects_own_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("media/a", [b"bytes"], "text/plain")
    path = storage.local_path("media/a")
    assert path is not None and Path(path).read_bytes() == b"bytes"
    assert storage.local_path("media/missing") is None
