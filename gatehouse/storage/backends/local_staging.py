"""The local backend's side of backups: blobs pinned by hard links, restored ones renamed into place.

Blobs are immutable (a new upload is a new version) and their files are only unlinked when
deleted, so a hard link keeps a blob's bytes however long a backup takes to copy them. Staging
folders live beside the blobs, on their file system, so that links and renames work; where a
link cannot be made (another file system, a file system without links) the blob is read where
it is. Where blobs live is the backend's ``path_of(key)``: nothing here knows the layout.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from gatehouse.storage.backends.base import BackendError
from gatehouse.storage.backends.staging import Staging

#: Staging folders older than this were left by a backup or restore that was killed; the next one removes them.
STALE_STAGING = 24 * 3600

#: A hard link may fail for these reasons while the blob is still readable where it is.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


def new(root: Path, purpose: str) -> Staging:
    """A new private folder ``root/.<purpose>-<random>``; killed backups' or restores' stale ones go first."""
    remove_stale(root, purpose)
    folder = root / f".{purpose}-{secrets.token_hex(8)}"
    try:
        folder.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise BackendError(f"cannot create a staging folder in {root}: {exc.strerror or exc}") from exc
    return Staging(folder)


def link(staging: Staging, keys: list[str], path_of: Callable[[str], Path]) -> None:
    """Link each key's blob into ``staging`` (or name the blob itself); absent blobs go to ``missing``."""
    for key in keys:
        source = path_of(key)
        try:
            mode = os.lstat(source).st_mode
        except (FileNotFoundError, NotADirectoryError):
            staging.missing.append(key)
            continue
        if not stat.S_ISREG(mode):
            raise BackendError(f"{source} is not a regular file; the storage folder is damaged")
        linked = staging.path(key)
        try:
            os.link(source, linked, follow_symlinks=False)
            staging.sources[key] = linked
        except (FileNotFoundError, NotADirectoryError):
            staging.missing.append(key)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise BackendError(f"cannot link {source} for the backup: {exc.strerror or exc}") from None
            staging.sources[key] = source  # no hard links here: read it where it is


def move_in(staging: Staging, path_of: Callable[[str], Path]) -> None:
    """Rename every staged blob to ``path_of(key)`` (making its folder), then fsync each folder."""
    folders: set[Path] = set()
    for key, path in staging.files():
        target = path_of(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        folders.add(target.parent)
    for folder in sorted(folders):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale(root: Path, purpose: str) -> None:
    """Remove ``root/.<purpose>-*`` folders of backups or restores that were killed (a running one is younger than a day)."""
    try:
        entries = list(root.glob(f".{purpose}-*"))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir() and time.time() - entry.stat().st_mtime > STALE_STAGING:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue
