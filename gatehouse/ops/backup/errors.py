"""What a backup or a restore raises."""

from __future__ import annotations


class BackupError(Exception):
    """A backup or restore cannot be done; the message says why and what to do."""


class Raced(Exception):
    """Blobs named by the snapshot were deleted before they were staged: take the backup again."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(", ".join(keys))
        self.keys = keys
