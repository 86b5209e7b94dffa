"""Blobs taken out of a store for a backup, or waiting to go back in after a restore.

A ``Staging`` is a private folder (mode 0700) that a backend makes where it suits it: the local
backend beside its blobs, on the same file system, so that a backup can hard-link them and a
restore can rename them into place. Inside, each blob is a file named after its key; only the
backend and this module know how (callers ask ``path(key)``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from gatehouse.storage.backends.keys import is_key, split_key


class Staging:
    """A private folder of blob files by key.

    For a backup, ``Backend.stage`` fills ``sources`` (where each key's bytes can be read until
    ``discard``: a file here, or the stored blob itself when it could not be pinned by a link)
    and ``missing`` (keys with no blob). For a restore, the caller writes each blob to
    ``path(key)`` and hands the folder to ``Backend.adopt``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sources: dict[str, Path] = {}
        self.missing: list[str] = []

    def __repr__(self) -> str:
        return f"Staging({str(self.folder)!r})"

    def path(self, key: str) -> Path:
        """Where the blob of ``key`` goes in this folder (its parent made if needed); ValueError for a bad key."""
        bucket, version = split_key(key)
        parent = self.folder / bucket
        parent.mkdir(exist_ok=True)
        return parent / version

    def files(self) -> Iterator[tuple[str, Path]]:
        """Every blob file in the folder as ``(key, path)``, bucket by bucket; anything else is skipped."""
        for bucket in sorted(self.folder.iterdir()):
            if not bucket.is_dir() or bucket.is_symlink():
                continue
            for blob in sorted(bucket.iterdir()):
                key = f"{bucket.name}/{blob.name}"
                if is_key(key) and blob.is_file() and not blob.is_symlink():
                    yield key, blob

    def discard(self) -> None:
        """Remove the folder and whatever is still in it (the blobs it linked stay in the store)."""
        shutil.rmtree(self.folder, ignore_errors=True)
