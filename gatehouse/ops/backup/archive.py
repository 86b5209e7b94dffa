"""The archive format: members, the manifest, writing an archive and reading one back checked.

Format 1, a tar file (gzip-compressed when its name ends in ``.tar.gz`` or ``.tgz``)::

    database.dump              pg_dump -Fc of Gatehouse's database
    keys.json                  the data folder's keys file (absent if the data folder had none)
    blobs/<key>                the bytes of each stored object, by storage key (<bucket>/<version>)
    manifest.json              written last: versions, counts, roles, migrations, sizes and SHA-256 of
                               every other member

Every member but the manifest is copied in chunks and hashed on the way; reading checks the
member list against the manifest before anything is written, and each member against its
SHA-256 as it is extracted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import tarfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from gatehouse import __version__
from gatehouse.ops.backup.errors import BackupError, Raced
from gatehouse.storage.backends import Staging, is_key

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE_MEMBER = "database.dump"
KEYS_MEMBER = "keys.json"
BLOBS_PREFIX = "blobs/"
CHUNK = 1024 * 1024


# -- writing ----------------------------------------------------------------------------------


def write_archive(
    target: Path,
    dump_path: Path,
    keys_file: Path,
    sources: dict[str, Path],
    facts: dict[str, Any],
    created_at: str,
    files_included: bool,
    pg_dump_version: str,
) -> tuple[dict[str, Any], int]:
    """Write the archive to a hidden file beside ``target``, then rename it into place; return the manifest and size.

    ``sources`` says where to read each stored file; one that has gone meanwhile raises ``Raced``.
    """
    compress = target.name.endswith((".tar.gz", ".tgz"))
    partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz" if compress else "w", format=tarfile.PAX_FORMAT) as tar:
                database = _add_file(tar, DATABASE_MEMBER, dump_path)
                keys = _add_file(tar, KEYS_MEMBER, keys_file) if keys_file.is_file() else None
                blobs = []
                missing = []
                for key in sorted(sources):
                    try:
                        blobs.append({"key": key, **_add_file(tar, BLOBS_PREFIX + key, sources[key])})
                    except FileNotFoundError:
                        missing.append(key)  # only files that could not be linked for the backup can go
                if missing:
                    raise Raced(missing)
                manifest = {
                    "format": FORMAT,
                    "gatehouse_version": __version__,
                    "created_at": created_at,
                    "postgresql": {
                        "version": facts["server_version"],
                        "major": facts["server_major"],
                        "pg_dump": pg_dump_version,
                    },
                    "database": {"name": facts["database"], "member": DATABASE_MEMBER, **database},
                    "keys": keys,
                    "counts": {
                        "users": facts["users"],
                        "objects": facts["objects"],
                        "files": len(blobs),
                        "file_bytes": sum(blob["size"] for blob in blobs),
                    },
                    "files_included": files_included,
                    "migrations": facts["migrations"],
                    "roles": facts["roles"],
                    "blobs": blobs,
                }
                body = json.dumps(manifest, indent=2).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = len(body), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(body))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot write the archive {target}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return manifest, target.stat().st_size


class _Hashing:
    """A file read through ``tarfile.addfile`` in chunks, hashed on the way."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        status = os.fstat(handle.fileno())
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = status.st_size, 0o600, int(status.st_mtime)
        reader = _Hashing(handle)
        try:
            tar.addfile(info, reader)  # copied in chunks, never whole
        except OSError as exc:
            raise BackupError(f"cannot copy {path} into the archive: {exc.strerror or exc}") from None
    return {"size": status.st_size, "sha256": reader.digest.hexdigest()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading ----------------------------------------------------------------------------------


def read_manifest(archive: Path) -> dict[str, Any]:
    """The manifest of an archive, after checking that every member it lists is there."""
    with open_archive(Path(archive).expanduser()) as tar:
        manifest, _ = check_members(tar, Path(archive))
        return manifest


@contextmanager
def open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
    """The archive opened for reading; a damaged one raises BackupError, here or in the caller's block."""
    if not archive.is_file():
        raise BackupError(f"{archive} does not exist or is not a file")
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed below, after the caller's block
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BackupError(f"{archive} is not a Gatehouse backup or is damaged: {exc}") from None
    try:
        yield tar
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(f"{archive} is damaged (truncated or altered): {exc}") from None
    finally:
        tar.close()


def check_members(tar: tarfile.TarFile, archive: Path) -> tuple[dict[str, Any], dict[str, tarfile.TarInfo]]:
    """The manifest and the members by name, once the members are exactly those the manifest lists."""
    damaged = f"{archive} is damaged (truncated or altered)"
    members: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        if member.name in members:
            raise BackupError(f"{damaged}: {member.name} appears twice")
        members[member.name] = member
    manifest_info = members.get(MANIFEST)
    if manifest_info is None:
        if not members:
            raise BackupError(f"{archive} is not a Gatehouse backup: it is empty")
        if DATABASE_MEMBER in members:
            raise BackupError(f"{damaged}: manifest.json, the last member, is missing, so the archive was cut short")
        raise BackupError(f"{archive} is not a Gatehouse backup (no manifest.json)")
    handle = tar.extractfile(manifest_info) if manifest_info.isreg() else None
    if handle is None:
        raise BackupError(f"{damaged}: manifest.json is not a file")
    try:
        manifest = json.loads(handle.read())
    except ValueError as exc:
        raise BackupError(f"{damaged}: manifest.json is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BackupError(f"{damaged}: manifest.json is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{archive} is a backup in format {manifest.get('format')!r} (by Gatehouse "
            f"{manifest.get('gatehouse_version', '?')}); this Gatehouse ({__version__}) reads format {FORMAT}"
        )
    try:
        expected = {DATABASE_MEMBER: manifest["database"]}
        if manifest["keys"] is not None:
            expected[KEYS_MEMBER] = manifest["keys"]
        for blob in manifest["blobs"]:
            if not (isinstance(blob["key"], str) and is_key(blob["key"])):
                raise BackupError(f"{damaged}: the manifest names the stored file {blob['key']!r}")
            expected[BLOBS_PREFIX + blob["key"]] = blob
        for name, entry in expected.items():
            found = members.get(name)
            if found is None or not found.isreg():
                raise BackupError(f"{damaged}: {name} is missing")
            if found.size != int(entry["size"]):
                raise BackupError(f"{damaged}: {name} holds {found.size} bytes, the manifest says {entry['size']}")
        for key in ("created_at", "postgresql", "counts", "migrations", "roles", "files_included"):
            manifest[key]  # presence check
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"{damaged}: manifest.json lacks {exc}") from None
    unexpected = set(members) - set(expected) - {MANIFEST}
    if unexpected:
        raise BackupError(f"{archive} holds members no Gatehouse backup has: {', '.join(sorted(unexpected)[:5])}")
    return manifest, members


def extract_all(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    manifest: dict[str, Any],
    dump_path: Path,
    staging: Staging | None,
    archive: Path,
) -> bytes | None:
    """Write the dump and the stored files (into ``staging``) out, checking each SHA-256; return keys.json's bytes."""
    blobs = {BLOBS_PREFIX + blob["key"]: blob for blob in manifest["blobs"]}
    keys_body = None
    # Members in archive order, so that a compressed archive is read forward once.
    for member in sorted(members.values(), key=lambda m: m.offset):
        if member.name == DATABASE_MEMBER:
            _extract(tar, member, dump_path, manifest["database"]["sha256"], archive)
        elif member.name == KEYS_MEMBER and manifest["keys"] is not None:
            handle = tar.extractfile(member)
            assert handle is not None
            keys_body = handle.read()
            if hashlib.sha256(keys_body).hexdigest() != manifest["keys"]["sha256"]:
                raise BackupError(f"{archive} is damaged: keys.json does not match its checksum")
        elif member.name in blobs and staging is not None:
            blob = blobs[member.name]
            _extract(tar, member, staging.path(blob["key"]), blob["sha256"], archive)
    return keys_body


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, sha256: str, archive: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None
    digest = hashlib.sha256()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != sha256:
        raise BackupError(f"{archive} is damaged: {member.name} does not match its checksum")
