"""Blobs as files in a folder: ``root/blobs/<bucket_id>/<version>``, uploads spooled in ``root/.spool``.

Only this backend knows that layout: backups stage blobs by hard links in ``root/.backup-*`` and
restores rename them in from ``root/.restore-*`` (``local_staging``).

The spool and the blobs share a filesystem, so ``put`` is ``os.replace``: a blob appears whole
or not at all, and after the file and its folder are fsynced it survives a power cut. File I/O
runs in worker threads (``asyncio.to_thread``) so the event loop never waits on the disk.

Every key becomes a path twice checked: ``validate_key`` allows two safe components only, and
the path is then resolved and must be exactly where the key says, under the root (no symlink
leads out), as supabase/storage's secure-path.ts does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from gatehouse.storage.backends import local_staging
from gatehouse.storage.backends.base import (
    CHUNK_SIZE,
    Backend,
    BackendError,
    BlobNotFound,
    LocalFile,
    Reader,
    clamp_range,
)
from gatehouse.storage.backends.keys import is_key, split_key, validate_prefix
from gatehouse.storage.backends.staging import Staging

T = TypeVar("T")

#: Opening a bucket folder: never through a symlink in its place (that open fails instead).
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: Directory entries read per worker-thread hop when listing keys.
_LIST_BATCH = 1000


class LocalBackend(Backend):
    def __init__(self, root: Path) -> None:
        try:
            Path(root).expanduser().mkdir(parents=True, exist_ok=True)
            self.root = Path(root).expanduser().resolve(strict=True)
            self._blobs = self.root / "blobs"
            self._blobs_path = str(self._blobs)
            self._blobs.mkdir(exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the storage folder {root}: {exc.strerror or exc}") from exc
        super().__init__(self.root / ".spool")

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        """The blob's path for a valid key (no I/O: the resolved check is ``_confine``)."""
        bucket, version = split_key(key)
        return self._blobs / bucket / version

    def _folder(self, bucket: str) -> str:
        """The bucket's folder (as a string: no Path objects on the download path)."""
        return f"{self._blobs_path}/{bucket}"

    def _confine(self, path: Path) -> Path:
        """``path`` itself, after checking that resolving it leads exactly there (touches the disk)."""
        resolved = path.resolve()
        if resolved != path or not resolved.is_relative_to(self._blobs):
            raise ValueError(f"the storage key {path.parent.name}/{path.name} resolves outside the storage folder")
        return path

    async def _run(self, action: str, work: Callable[[], T]) -> T:
        """Run blocking file work in a thread; an OSError becomes BackendError."""
        try:
            return await asyncio.to_thread(work)
        except OSError as exc:
            raise BackendError(f"cannot {action} in the storage folder {self.root}: {exc.strerror or exc}") from exc

    async def check(self) -> None:
        def probe() -> None:
            for folder in (self._blobs, self.spool_dir):
                path = folder / f".probe-{secrets.token_hex(8)}"
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                os.unlink(path)

        await self._run("write", probe)

    async def put(self, key: str, source: Path, *, content_type: str) -> None:
        bucket, version = split_key(key)
        path = self._path(key)
        source = Path(source)

        def move() -> None:
            # Few system calls, each a hand-over of the GIL to a busy event loop: the bucket folder
            # is opened once (never through a symlink) and the rename and its fsync go through it.
            _fsync(source)
            for _ in range(3):
                folder = self._open_folder(bucket)
                try:
                    os.replace(source, version, dst_dir_fd=folder)
                    os.fsync(folder)
                    return
                except FileNotFoundError:
                    if not source.exists():
                        raise
                    # A concurrent delete removed the (empty) bucket folder in between: make it again.
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self._copy_into_place(source, path)  # the caller spooled outside spool_dir
                    source.unlink()
                    return
                finally:
                    os.close(folder)
            raise OSError(errno.ENOENT, "the bucket folder keeps disappearing")

        await self._run("store an object", move)

    def _open_folder(self, bucket: str) -> int:
        """A descriptor of the bucket's folder, made if missing; a symlink there is refused."""
        path = self._folder(bucket)
        for _ in range(3):
            try:
                return os.open(path, _FOLDER)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
            except NotADirectoryError:
                raise ValueError(f"the storage folder {bucket} resolves outside the storage folder") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ValueError(f"the storage folder {bucket} resolves outside the storage folder") from None
                raise
        raise OSError(errno.ENOENT, "the bucket folder keeps disappearing")

    def _copy_into_place(self, source: Path, path: Path) -> None:
        """Copy ``source`` to ``path`` atomically, through a temporary file in the spool."""
        temp = self.spool_dir / f"copy-{secrets.token_hex(16)}.part"
        try:
            shutil.copyfile(source, temp)
            _fsync(temp)
            for _ in range(3):
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(temp, path)
                    break
                except FileNotFoundError:
                    if not temp.exists():
                        raise
            else:
                raise OSError(errno.ENOENT, "the bucket folder keeps disappearing")
            _fsync(path.parent)
        finally:
            temp.unlink(missing_ok=True)

    async def _open(self, key: str, start: int, end: int | None) -> Reader:
        path = self._path(key)

        def opener() -> _FileReader:
            try:
                fd = os.open(self._confine(path), os.O_RDONLY)
            except (FileNotFoundError, NotADirectoryError):
                raise BlobNotFound(key) from None
            try:
                size = os.fstat(fd).st_size
                first, last = clamp_range(size, start, end)
            except BaseException:
                os.close(fd)
                raise
            return _FileReader(fd, size, first, last)

        return await self._run("read an object", opener)

    async def size(self, key: str) -> int | None:
        path = self._path(key)

        def stat() -> int | None:
            try:
                return self._confine(path).stat().st_size
            except (FileNotFoundError, NotADirectoryError):
                return None

        return await self._run("read an object", stat)

    def open_local(self, key: str) -> LocalFile | None:
        """Open the blob with ``O_NOFOLLOW`` at both levels under the resolved blobs folder.

        Three syscalls in the event loop, no thread: the key's two components are checked by
        ``split_key``, and a symlink in place of either is never followed (what ``_confine``
        checks by resolving): a symlinked bucket folder is not found, a symlinked blob refused.
        """
        bucket, version = split_key(key)
        folder_path = self._folder(bucket)
        try:
            folder = os.open(folder_path, _FOLDER)
            try:
                fd = os.open(version, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            finally:
                os.close(folder)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError(f"the storage key {key} is a symlink in the storage folder") from None
            raise BackendError(f"cannot read an object in the storage folder {self.root}: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        return LocalFile(fd, info.st_size, f"{folder_path}/{version}")

    def local_path(self, key: str) -> Path | None:
        path = self._confine(self._path(key))
        return path if path.is_file() else None

    async def delete(self, key: str) -> None:
        await self.delete_many([key])

    async def delete_many(self, keys: list[str]) -> None:
        """All in one worker-thread hop, a bucket folder opened once for all its keys.

        ``unlinkat`` through the folder's descriptor names a plain file in it: nothing is
        resolved and no symlink is followed, as with ``open_local``. A bucket folder left empty
        is removed.
        """
        by_bucket: dict[str, list[str]] = {}
        for key in keys:
            bucket, version = split_key(key)
            by_bucket.setdefault(bucket, []).append(version)

        def remove_all() -> None:
            for bucket, versions in by_bucket.items():
                self._remove(bucket, versions)

        await self._run("delete objects", remove_all)

    def _remove(self, bucket: str, versions: list[str]) -> None:
        try:
            folder = os.open(self._folder(bucket), _FOLDER)
        except (FileNotFoundError, NotADirectoryError):
            return  # no folder (or a symlink in its place): nothing of ours to delete
        try:
            for version in versions:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(version, dir_fd=folder)
        finally:
            os.close(folder)
        with contextlib.suppress(OSError):
            os.rmdir(self._folder(bucket))  # only if now empty; never the blobs folder itself

    async def copy(self, source: str, target: str) -> None:
        source_path, target_path = self._path(source), self._path(target)

        def copy() -> None:
            self._confine(target_path)
            if not self._confine(source_path).is_file():
                raise BlobNotFound(source)
            try:
                self._copy_into_place(source_path, target_path)
            except FileNotFoundError:
                if not source_path.exists():
                    raise BlobNotFound(source) from None  # deleted meanwhile
                raise

        await self._run("copy an object", copy)

    async def keys(self, prefix: str = "") -> AsyncIterator[tuple[str, datetime]]:
        validate_prefix(prefix)
        only = prefix.split("/", 1)[0] if "/" in prefix else None

        def buckets() -> list[str]:
            with os.scandir(self._blobs) as entries:
                return sorted(
                    entry.name for entry in entries
                    if entry.is_dir(follow_symlinks=False) and entry.name.startswith(prefix[: len(entry.name)])
                )

        for bucket in await self._run("list objects", buckets):
            if only is not None and bucket != only:
                continue
            entries = await self._run("list objects", partial(_scandir, self._blobs / bucket))
            if entries is None:
                continue  # emptied and removed meanwhile
            try:
                while True:
                    batch, done = await self._run("list objects", partial(_key_batch, entries, bucket, prefix))
                    for item in batch:
                        yield item
                    if done:
                        break
            finally:
                entries.close()

    # -- backups -------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self._blobs)

    def staging(self, purpose: str) -> Staging:
        """A new folder ``root/.<purpose>-<random>``, beside the blobs (``local_staging.new``)."""
        return local_staging.new(self.root, purpose)

    async def stage(self, keys: Iterable[str]) -> Staging:
        """Hard-link each key's file into the staging folder (``local_staging.link``), in a worker thread."""
        staging = self.staging("backup")
        try:
            await self._run("read the stored files", partial(local_staging.link, staging, list(keys), self._path))
        except BaseException:
            staging.discard()
            raise
        return staging

    async def adopt(self, staging: Staging) -> None:
        """Rename each staged blob into place (``local_staging.move_in``), in a worker thread."""
        await self._run("store the restored files", partial(local_staging.move_in, staging, self._path))

    async def close(self) -> None:
        return None


class _FileReader:
    def __init__(self, fd: int, size: int, start: int, end: int) -> None:
        self.size, self.start, self.end = size, start, end
        self._fd: int | None = fd
        self._position = start

    async def read(self) -> bytes:
        wanted = min(CHUNK_SIZE, self.end + 1 - self._position)
        if wanted <= 0 or self._fd is None:
            return b""
        try:
            data = await asyncio.to_thread(os.pread, self._fd, wanted, self._position)
        except OSError as exc:
            raise BackendError(f"cannot read an object from the storage folder: {exc.strerror or exc}") from exc
        if not data:
            raise BackendError("a stored object is shorter than its recorded size")
        self._position += len(data)
        return data

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        # Starlette's StreamingResponse never closes its iterator when the client goes away:
        # a download dropped half-way still gives its descriptor back.
        with contextlib.suppress(Exception):
            self._close()


def _scandir(path: Path) -> os._ScandirIterator[str] | None:
    try:
        return os.scandir(path)
    except FileNotFoundError:
        return None


def _key_batch(entries: Iterator[os.DirEntry[str]], bucket: str, prefix: str) -> tuple[list[tuple[str, datetime]], bool]:
    batch: list[tuple[str, datetime]] = []
    for count, entry in enumerate(entries, 1):
        key = f"{bucket}/{entry.name}"
        if is_key(key) and key.startswith(prefix):
            try:
                if entry.is_file(follow_symlinks=False):
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                    batch.append((key, datetime.fromtimestamp(mtime, UTC)))
            except FileNotFoundError:
                pass  # deleted meanwhile
        if count >= _LIST_BATCH:
            return batch, False
    return batch, True


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

