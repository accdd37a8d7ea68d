"""A storage backend on a local (or mounted) filesystem: one file per object under a root.

Longer than most modules (about 700 lines) on purpose: the registry gives each backend one
module, and this one holds the whole interface (atomic puts, ranged reads, staged uploads with
parts written in place, listing without in-flight temp files, path containment) together with
the translation of every OSError, so the rules for one filesystem are read in one place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from storage.base import (
    DEFAULT_CHUNK_SIZE,
    ObjectInfo,
    PartInfo,
    Storage,
    StoredObject,
    check_part_number,
    check_parts,
    check_range,
)
from storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from storage.keys import is_valid_key, validate_key

TMP_PREFIX = ".tmp-"
# A staged upload is the directory <root>/.tmp-upload-<upload id> (32 hex of a uuid4) holding the
# file UPLOAD_KEY_FILE (the key it will become) and its parts, part-00001 ... part-10000. Being
# under a TMP_PREFIX name, it is never listed as objects and no key can name it.
UPLOAD_PREFIX = TMP_PREFIX + "upload-"
UPLOAD_KEY_FILE = "key"
_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
# An aborted or completed upload's directory is renamed to UPLOAD_PREFIX + "trash-<hex>" before
# it is removed, so its id stops working at once even if the removal is cut short.
_TRASH_PREFIX = UPLOAD_PREFIX + "trash-"
_FILE_MODE = 0o640
# Each stored part file starts with its etag, the sha256 of the part's bytes.
_PART_TAG_BYTES = 32
# With a part size (begin_parts), parts of that size live at their offsets in one data file.
_PART_SIZE_FILE = "size"
_DATA_FILE = "data"
_DIR_MODE = 0o750
# A concurrent delete may prune a directory a put has just created; a few retries always win
# because the put's temp file keeps the directory non-empty once it exists.
_DIR_ATTEMPTS = 5
# More than any valid key's UTF-8: a longer key file is not one begin_parts wrote.
_MAX_KEY_FILE_SIZE = 4 * 1024

# errno of a write that fails because of the key's shape, not because the storage is unusable.
_KEY_CLASH = {
    errno.ENAMETOOLONG: "a path segment is too long for the filesystem",
    errno.EISDIR: "it is the prefix of other stored keys",
    errno.ENOTDIR: "a leading part of it is already the key of an object",
    errno.ELOOP: "it resolves through a symlink loop",
}
# errno of a read that simply means there is no such object.
_MISSING = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


class LocalStorage(Storage):
    """Objects as files under ``root``; the key's ``/`` segments are directories."""

    name = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        try:
            os.makedirs(root, mode=_DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot create storage root {os.fspath(root)!r}: {_describe(exc)}"
            ) from exc
        # Resolved once so the containment check in _path compares like with like.
        self.root: str = os.path.realpath(root)

    def __repr__(self) -> str:
        return f"LocalStorage(root={self.root!r})"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> LocalStorage:
        """``STORAGE_ROOT``: the directory that holds the objects."""
        root = settings.get("STORAGE_ROOT")
        if not root:
            raise ValueError("STORAGE_ROOT must be set for the 'local' storage backend")
        return cls(root=root)

    # -- writing --------------------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> StoredObject:
        """Write to a temp file beside the target, fsync, rename over the target, fsync the dir."""
        # content_type is not kept: this backend stores bytes only (the database has the type).
        path = self._path(key)
        directory = os.path.dirname(path)
        fd, tmp, created = self._create_temp(key)
        hasher = hashlib.sha256()
        size = 0
        f = os.fdopen(fd, "wb")
        try:
            for chunk in chunks:  # errors of the producer propagate untranslated
                hasher.update(chunk)
                with _writing(key):
                    size += f.write(chunk)
            with _writing(key):
                f.flush()
                os.fsync(f.fileno())
                f.close()
                os.replace(tmp, path)
        except BaseException:
            # BaseException too: eventlet stops a killed greenthread with GreenletExit.
            with contextlib.suppress(OSError):
                f.close()  # may fail flushing, which must not hide the original error
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # The rename (and any new directory) is only durable once the parent entries are synced.
        with _writing(key):
            for synced in sorted({directory, *(os.path.dirname(d) for d in created)}):
                _fsync_dir(synced)
        return StoredObject(key=key, size=size, checksum=f"sha256:{hasher.hexdigest()}")

    def delete(self, key: str) -> bool:
        """Unlink the object, then prune directories it leaves empty (never the root)."""
        path = self._path(key)
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno in _MISSING:
                return False
            raise StorageUnavailable(f"cannot delete {key!r}: {_describe(exc)}") from exc
        directory = os.path.dirname(path)
        while len(directory) > len(self.root):
            try:
                os.rmdir(directory)
            except OSError:
                # Not empty (a concurrent put), already gone, or not removable: pruning is
                # best effort and the object itself is deleted.
                break
            directory = os.path.dirname(directory)
        return True

    # -- reading --------------------------------------------------------------------------------

    def local_path(self, key: str) -> str | None:
        """The object's own file (read it only: objects are immutable once written)."""
        path = self._path(key)
        return path if os.path.isfile(path) else None

    def head(self, key: str) -> ObjectInfo:
        """Size and mtime of the object's file; ``content_type`` is always None here."""
        path = self._path(key)
        with _reading(key):
            st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return _info(key, st)

    def iter_chunks(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)``; a missing object raises here, not on the first chunk."""
        check_range(start, end, chunk_size)
        path = self._path(key)
        # Checked eagerly so callers can answer 404 before they start a response; the file is
        # opened lazily so an iterator that is never consumed holds no descriptor.
        self.head(key)
        return self._stream(key, path, start, end, chunk_size)

    def _stream(
        self, key: str, path: str, start: int, end: int | None, chunk_size: int
    ) -> Iterator[bytes]:
        with _reading(key):
            f = open(path, "rb")  # closed by the with below, which spans the yields
        with f:
            with _reading(key):
                f.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                with _reading(key):
                    data = f.read(want)
                if not data:
                    return
                if remaining is not None:
                    remaining -= len(data)
                yield data

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the directory part of ``prefix``; temp files of in-flight writes are skipped."""
        directory, _, _ = prefix.rpartition("/")
        base = self._path(directory) if directory else self.root
        # An absent root (e.g. an unmounted volume) must not look like an empty store.
        if not os.path.isdir(self.root):
            raise StorageUnavailable(f"storage root {self.root!r} is missing")
        return self._walk(base, prefix)

    def abort_incomplete_uploads(self, older_than: timedelta) -> int:
        """Remove the temp files of writes that died before their rename, and the staged uploads
        (``.tmp-upload-*`` directories) nobody touched for ``older_than``.

        A live write keeps touching its temp file, so one untouched for ``older_than`` belongs to
        a process that is gone. A staged upload counts as touched when its newest file (or the
        directory itself) was: pick ``older_than`` above the longest pause between two parts.
        """
        if not os.path.isdir(self.root):
            raise StorageUnavailable(f"storage root {self.root!r} is missing")
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == self.root:
                staged = [d for d in dirnames if d.startswith(UPLOAD_PREFIX)]
                dirnames[:] = [d for d in dirnames if not d.startswith(UPLOAD_PREFIX)]
                for name in staged:
                    path = os.path.join(dirpath, name)
                    if os.path.islink(path):
                        continue  # not made by begin_parts; never follow it
                    newest = _newest_mtime(path)
                    if newest is not None and newest < cutoff and _discard_upload(self.root, path):
                        removed += 1
            for filename in filenames:
                if not filename.startswith(TMP_PREFIX):
                    continue
                path = os.path.join(dirpath, filename)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue  # renamed into place or removed meanwhile
        return removed

    def _walk(self, base: str, prefix: str) -> Iterator[ObjectInfo]:
        def on_error(exc: OSError) -> None:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return  # removed by a concurrent delete, or the prefix names an object
            raise StorageUnavailable(f"cannot list {prefix!r}: {_describe(exc)}") from exc

        for dirpath, dirnames, filenames in os.walk(base, onerror=on_error):
            dirnames[:] = [d for d in dirnames if not d.startswith(TMP_PREFIX)]
            relative = os.path.relpath(dirpath, self.root)
            parent = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            for filename in filenames:
                key = parent + filename
                if filename.startswith(TMP_PREFIX) or not key.startswith(prefix):
                    continue
                if not is_valid_key(key):
                    continue  # not written by put (placed by hand): no key could address it
                try:
                    st = os.lstat(os.path.join(dirpath, filename))
                except FileNotFoundError:
                    continue  # deleted since the directory was read
                except OSError as exc:
                    raise StorageUnavailable(f"cannot stat {key!r}: {_describe(exc)}") from exc
                if stat.S_ISREG(st.st_mode):
                    yield _info(key, st)

    # -- staged uploads -------------------------------------------------------------------------

    def begin_parts(self, key: str, content_type: str, part_size: int | None = None) -> str:
        """Create the upload's staging directory under the root, recording ``key`` in it.

        ``content_type`` is not kept, as with put. With ``part_size``, parts of that size are
        written at their place in one data file as they arrive, and completing renames it.
        """
        self._path(key)
        if part_size is not None and (not isinstance(part_size, int) or part_size < 1):
            raise ValueError(f"part_size must be a positive integer, got {part_size!r}")
        if not os.path.isdir(self.root):
            # Never recreate the root: it may be an unmounted volume's mount point.
            raise StorageUnavailable(f"storage root {self.root!r} is missing")
        upload_id = uuid.uuid4().hex
        staging = os.path.join(self.root, UPLOAD_PREFIX + upload_id)
        try:
            os.mkdir(staging, _DIR_MODE)
            os.chmod(staging, _DIR_MODE)  # mkdir's mode is filtered through the umask
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot start a staged upload of {key!r}: {_describe(exc)}"
            ) from exc
        try:
            if part_size is not None:
                _write_atomically(staging, _PART_SIZE_FILE, [str(part_size).encode()], key)
            # Until this file is in place the id is unknown: a crash leaves a directory that
            # abort_incomplete_uploads removes.
            _write_atomically(staging, UPLOAD_KEY_FILE, [key.encode()], key)
            with _writing(key):
                _fsync_dir(self.root)
        except BaseException:
            _discard_upload(self.root, staging)
            raise
        return upload_id

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> PartInfo:
        """Write the part atomically (temp file, fsync, rename) as ``part-NNNNN``: its etag,
        then its bytes."""
        self._path(key)
        check_part_number(number)
        size = memoryview(data).nbytes  # also rejects what is not bytes-like (str)
        staging = self._staging(key, upload_id)
        # The etag (the part's sha256, so a retry of the same bytes gets the same etag, as on
        # S3) heads the part file, written atomically with it: completion checks it without
        # hashing the part a second time.
        tag = hashlib.sha256(data).digest()
        part_size = _part_size(key, staging)
        if size == part_size:
            # In place: the bytes at their offset in the data file, durable before the part
            # file (then only its etag) says they are there.
            _write_at(staging, (number - 1) * part_size, data, key)
            _write_atomically(staging, _part_name(number), [tag], key)
        else:
            _write_atomically(staging, _part_name(number), [tag, data], key)
        return PartInfo(number=number, size=size, etag=tag.hex())

    def complete_parts(
        self, key: str, upload_id: str, parts: list[PartInfo], checksum: str | None = None
    ) -> StoredObject:
        """Stream the part files through :meth:`put` (each checked against its etag on the way),
        then remove the staging directory. One read of each part, no extra copy."""
        self._path(key)  # an invalid key fails before anything is read
        ordered = check_parts(parts)
        staging = self._staging(key, upload_id)
        missing = [
            part.number
            for part in ordered
            if not os.path.isfile(os.path.join(staging, _part_name(part.number)))
        ]
        if missing:
            raise ValueError(
                f"cannot complete upload {upload_id} of {key!r}: part(s) {missing} were never "
                "stored"
            )
        part_size = _part_size(key, staging)
        if part_size is not None and all(part.size == part_size for part in ordered[:-1]):
            stored = self._complete_in_place(key, upload_id, staging, ordered, part_size, checksum)
        else:
            # put() does the atomic write; a part whose bytes do not match its etag stops it
            # midway, which leaves no object behind.
            chunks = (
                chunk
                for part in ordered
                for chunk in _read_part(key, upload_id, staging, part, part_size)
            )
            stored = self.put(key, chunks, "")
        # Best effort: the object is in place; leftovers go with abort_incomplete_uploads.
        _discard_upload(self.root, staging)
        return stored

    def _complete_in_place(
        self,
        key: str,
        upload_id: str,
        staging: str,
        parts: list[PartInfo],
        part_size: int,
        checksum: str | None,
    ) -> StoredObject:
        """The parts already sit at their offsets in the data file: put the short last part
        there too, cut the file to size, fsync, hash it once (unless the caller did) and rename
        it into place."""
        data_path = os.path.join(staging, _DATA_FILE)
        total = sum(part.size for part in parts)
        with _writing(key):
            fd = os.open(data_path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            for part in parts:
                rest = _part_file_rest(key, upload_id, staging, part)
                if rest:  # a part kept in its own file (the last, shorter one)
                    with _writing(key):
                        os.pwrite(fd, rest, (part.number - 1) * part_size)
            with _writing(key):
                os.ftruncate(fd, total)
                os.fsync(fd)
            if checksum is None:
                hasher = hashlib.sha256()
                with _reading(key):
                    while block := os.read(fd, DEFAULT_CHUNK_SIZE):
                        hasher.update(block)
                checksum = f"sha256:{hasher.hexdigest()}"
        finally:
            os.close(fd)
        path = self._path(key)
        segments = key.split("/")[:-1]
        created: list[str] = []
        with _writing(key):
            for attempt in range(_DIR_ATTEMPTS):
                created.extend(self._make_dirs(segments))
                try:
                    os.replace(data_path, path)
                    break
                except FileNotFoundError:
                    # A concurrent delete pruned the (empty) directory; make it again.
                    if attempt == _DIR_ATTEMPTS - 1 or not os.path.isdir(self.root):
                        raise
            for synced in sorted({os.path.dirname(path), *(os.path.dirname(d) for d in created)}):
                _fsync_dir(synced)
        return StoredObject(key=key, size=total, checksum=checksum)

    def abort_parts(self, key: str, upload_id: str) -> None:
        """Rename the staging directory away (the id is dead from then on), then remove it."""
        self._path(key)
        try:
            staging = self._staging(key, upload_id)
        except ObjectNotFound:
            return
        _discard_upload(self.root, staging)

    def _staging(self, key: str, upload_id: str) -> str:
        """The staging directory of the upload of ``key``; ObjectNotFound if there is none."""
        if not isinstance(upload_id, str) or _UPLOAD_ID_RE.fullmatch(upload_id) is None:
            raise ObjectNotFound(key)  # never issued by begin_parts, and never part of a path
        staging = os.path.join(self.root, UPLOAD_PREFIX + upload_id)
        try:
            with open(os.path.join(staging, UPLOAD_KEY_FILE), "rb") as f:
                recorded = f.read(_MAX_KEY_FILE_SIZE)
        except OSError as exc:
            if exc.errno not in _MISSING:
                raise StorageUnavailable(
                    f"cannot read upload {upload_id} of {key!r}: {_describe(exc)}"
                ) from exc
            if not os.path.isdir(self.root):
                raise StorageUnavailable(f"storage root {self.root!r} is missing") from exc
            raise ObjectNotFound(key) from exc
        if recorded != key.encode():
            raise ObjectNotFound(key)  # the upload of another key, as S3 has it
        return staging

    # -- health ---------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise StorageUnavailable unless the root is an existing, writable directory."""
        if not os.path.isdir(self.root):
            raise StorageUnavailable(f"storage root {self.root!r} is missing or not a directory")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"storage root {self.root!r} is not writable")

    # -- helpers --------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        validate_key(key)
        segments = key.split("/")
        if any(segment.startswith(TMP_PREFIX) for segment in segments):
            # Such an object would be invisible to iter_objects and could collide with temp files.
            raise InvalidKey(key, f"segments starting with {TMP_PREFIX!r} are reserved")
        path = os.path.join(self.root, *segments)
        # Defence in depth: a symlink planted under the root must not lead outside it.
        real = os.path.realpath(path)
        if real == self.root or os.path.commonpath([self.root, real]) != self.root:
            raise InvalidKey(key, "resolves outside the storage root")
        return path

    def _create_temp(self, key: str) -> tuple[int, str, list[str]]:
        """Create the key's parent directories and an open temp file among them."""
        segments = key.split("/")[:-1]
        directory = os.path.join(self.root, *segments)
        created: list[str] = []
        for _ in range(_DIR_ATTEMPTS):
            try:
                created.extend(self._make_dirs(segments))
                fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
            except FileNotFoundError:
                if not os.path.isdir(self.root):
                    break  # never recreate the root: it may be an unmounted volume's mount point
                continue
            except OSError as exc:
                raise _write_error(key, exc) from exc
            try:
                os.fchmod(fd, _FILE_MODE)
            except OSError as exc:
                os.close(fd)
                os.unlink(tmp)
                raise _write_error(key, exc) from exc
            return fd, tmp, created
        if not os.path.isdir(self.root):
            raise StorageUnavailable(f"storage root {self.root!r} is missing")
        raise StorageUnavailable(f"cannot create the directory of {key!r}: it keeps disappearing")

    def _make_dirs(self, segments: list[str]) -> list[str]:
        created = []
        current = self.root
        for segment in segments:
            current = os.path.join(current, segment)
            try:
                os.mkdir(current, _DIR_MODE)
            except FileExistsError:
                continue  # if it is a file, mkstemp fails with ENOTDIR: a key clash
            os.chmod(current, _DIR_MODE)  # mkdir's mode is filtered through the umask
            created.append(current)
        return created


def _part_name(number: int) -> str:
    return f"part-{number:05d}"


def _write_atomically(directory: str, name: str, data: list[bytes], key: str) -> None:
    """``directory/name`` holds ``data`` completely or not at all; durable once this returns.

    ObjectNotFound if ``directory`` (a staging directory) is gone.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory)
    except FileNotFoundError as exc:
        raise ObjectNotFound(key) from exc
    except OSError as exc:
        raise _write_error(key, exc) from exc
    f = os.fdopen(fd, "wb")
    try:
        with _writing(key):
            os.fchmod(fd, _FILE_MODE)
            f.writelines(data)
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with _writing(key):
        _fsync_dir(directory)


def _open_part(key: str, upload_id: str, staging: str, part: PartInfo) -> IO[bytes]:
    """The part's file, positioned after its etag; ValueError if it disappeared (aborted
    meanwhile) or is not the write ``part`` describes."""
    number = part.number
    try:
        f = open(os.path.join(staging, _part_name(number)), "rb")
    except FileNotFoundError as exc:
        raise ValueError(
            f"cannot complete upload {upload_id} of {key!r}: part {number} is gone "
            "(aborted or completed meanwhile?)"
        ) from exc
    except OSError as exc:
        raise StorageUnavailable(f"cannot read part {number} of {key!r}: {_describe(exc)}") from exc
    try:
        with _reading(key):
            tag = f.read(_PART_TAG_BYTES)
    except BaseException:
        f.close()
        raise
    if tag.hex() != part.etag:
        f.close()
        raise ValueError(
            f"cannot complete upload {upload_id} of {key!r}: part {number} was put again "
            f"since (etag {tag.hex()}, not {part.etag!r})"
        )
    return f


def _part_file_rest(key: str, upload_id: str, staging: str, part: PartInfo) -> bytes:
    """What the part's own file holds after its etag: its bytes, or nothing for a part stored
    in place."""
    with _open_part(key, upload_id, staging, part) as f, _reading(key):
        return f.read()


def _read_part(
    key: str, upload_id: str, staging: str, part: PartInfo, part_size: int | None
) -> Iterator[bytes]:
    """The bytes of a stored part in chunks, from its own file or from its place in the data
    file."""
    with _open_part(key, upload_id, staging, part) as f:
        with _reading(key):
            first = f.read(DEFAULT_CHUNK_SIZE)
        if not first and part_size is not None and part.size:
            # Stored in place: read its range of the data file.
            offset = (part.number - 1) * part_size
            with _reading(key), open(os.path.join(staging, _DATA_FILE), "rb") as data:
                data.seek(offset)
                left = part.size
                while left > 0:
                    chunk = data.read(min(DEFAULT_CHUNK_SIZE, left))
                    if not chunk:
                        raise ValueError(f"part {part.number} of {key!r} is short on disk")
                    left -= len(chunk)
                    yield chunk
            return
        chunk = first
        while chunk:
            yield chunk
            with _reading(key):
                chunk = f.read(DEFAULT_CHUNK_SIZE)


def _part_size(key: str, staging: str) -> int | None:
    """The upload's part size, if begin_parts was given one."""
    try:
        with open(os.path.join(staging, _PART_SIZE_FILE), "rb") as f:
            return int(f.read(32))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageUnavailable(f"cannot read the part size of an upload of {key!r}") from exc


def _write_at(staging: str, offset: int, data: bytes, key: str) -> None:
    """Write ``data`` at ``offset`` of the upload's data file, durably."""
    try:
        fd = os.open(os.path.join(staging, _DATA_FILE), os.O_WRONLY | os.O_CREAT, _FILE_MODE)
    except FileNotFoundError as exc:
        raise ObjectNotFound(key) from exc  # aborted meanwhile
    except OSError as exc:
        raise _write_error(key, exc) from exc
    try:
        with _writing(key):
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            # fdatasync: the bytes and the size needed to read them back, without the inode
            # times; a full fsync per part made the next part's write wait (measured 1.8-3.9 s
            # against 0.7-1.0 s per GiB in 8 MiB parts on this disk).
            os.fdatasync(fd)
    finally:
        os.close(fd)


def _discard_upload(root: str, staging: str) -> bool:
    """Rename a staging directory to a trash name, then remove it; False if it was gone.

    Best effort past the rename: what a failed removal leaves is still under UPLOAD_PREFIX, for
    abort_incomplete_uploads.
    """
    if os.path.basename(staging).startswith(_TRASH_PREFIX):
        trash = staging  # left over from an earlier, interrupted removal
    else:
        trash = os.path.join(root, f"{_TRASH_PREFIX}{uuid.uuid4().hex}")
        try:
            os.rename(staging, trash)
        except FileNotFoundError:
            return False  # aborted, completed or swept by someone else
        except OSError:
            trash = staging  # cannot rename: remove it in place
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _newest_mtime(directory: str) -> float | None:
    """The latest mtime of ``directory`` and the files in it; None if it is gone."""
    try:
        newest = os.lstat(directory).st_mtime
        with os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return newest


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=st.st_size,
        content_type=None,
        modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
    )


def _describe(exc: OSError) -> str:
    if exc.errno is None or not exc.strerror:
        return str(exc)
    return f"{exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})"


def _write_error(key: str, exc: OSError) -> StorageError:
    if exc.errno in _KEY_CLASH:
        return InvalidKey(key, f"cannot be stored: {_KEY_CLASH[exc.errno]}")
    return StorageUnavailable(f"cannot write {key!r}: {_describe(exc)}")


@contextlib.contextmanager
def _writing(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _write_error(key, exc) from exc


@contextlib.contextmanager
def _reading(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in _MISSING:
            raise ObjectNotFound(key) from exc
        raise StorageUnavailable(f"cannot read {key!r}: {_describe(exc)}") from exc


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync a directory at all; that is not a failed write.
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)
