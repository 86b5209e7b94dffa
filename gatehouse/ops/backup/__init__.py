"""Backups: the database, the keys and the stored files in one archive; restore into a new data folder.

``gatehouse backup`` and ``gatehouse restore`` call ``backup`` and ``restore`` (``jobs``); the
archive format is ``archive``, the database's part (snapshot facts, pg_dump, roles,
pg_restore) is ``database``, and the stored files go through the storage backend (``files``).

**The archive holds secrets** (the signing key and the secret key in ``keys.json``, every
password hash in the dump): it is written with mode 0600, and should be stored like the data
folder itself.

Only the local storage backend's files are copied. With S3, ``backup`` refuses unless the files
are left out (``include_files=False``, ``--database-only``); back the bucket up with S3's own
tools.
"""

from __future__ import annotations

from gatehouse.ops.backup.archive import read_manifest
from gatehouse.ops.backup.errors import BackupError
from gatehouse.ops.backup.jobs import BackupSummary, RestoreSummary, backup, restore

__all__ = ["BackupError", "BackupSummary", "RestoreSummary", "backup", "read_manifest", "restore"]
