"""The project's bucket files, as ``supabase storage cp -r`` or an S3 sync lays them out: ``DIR/<bucket>/<name>``.

An object's name comes from the dump, so it is checked as Gatehouse checks every name (no ``..``
or ``.`` segments, no leading ``/``, no control characters) and the file must then resolve inside
its bucket's folder, be a regular file and not a symbolic link: no row can make the import read
a file outside ``DIR``. Bytes are copied into the backend's spool (the backend moves what it
stores), counting their size and MD5 on the way.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from gatehouse.core.errors import GatehouseError
from gatehouse.storage import names

__all__ = ["Copied", "Refused", "copy_into", "inventory", "locate"]

CHUNK = 1024 * 1024


class Refused(Exception):
    """This object's file may not be read (the message says why)."""


@dataclass(frozen=True)
class Copied:
    path: Path
    size: int
    md5: str


def locate(root: Path, bucket: str, name: str) -> Path | None:
    """The file holding ``bucket``/``name`` under ``root``; None if there is none; ``Refused`` if
    the name may not be looked up at all."""
    try:
        names.object_name(name)
        names.bucket_id(bucket)
    except GatehouseError as exc:
        raise Refused(exc.message) from None
    base = (root / bucket).resolve()
    candidate = root / bucket / name
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError):
        raise Refused("the path cannot be resolved (a symbolic link loop?)") from None
    if not resolved.is_relative_to(base):
        raise Refused("the path leads outside the bucket's folder")
    if candidate.is_symlink():
        raise Refused("the file is a symbolic link")
    if not candidate.exists():
        return None
    if not candidate.is_file():
        raise Refused("not a regular file")
    return candidate


def inventory(root: Path) -> dict[str, set[str]]:
    """Every regular file under ``root``, by bucket folder, as object names (``a/b.png``)."""
    found: dict[str, set[str]] = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.is_symlink():
            found.setdefault("", set()).add(folder.name)
            continue
        entries = found.setdefault(folder.name, set())
        for where, _dirs, files in os.walk(folder, followlinks=False):
            for file in files:
                entries.add((Path(where) / file).relative_to(folder).as_posix())
    return found


def copy_into(source: Path, spool: Path) -> Copied:
    """Copy ``source`` (never through a symbolic link) to a new file in ``spool``."""
    spool.mkdir(parents=True, exist_ok=True)
    target = spool / f"import-{uuid.uuid4().hex}.part"
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Refused("not a regular file")
        with os.fdopen(os.dup(fd), "rb") as reader, target.open("wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return Copied(target, size, digest.hexdigest())
