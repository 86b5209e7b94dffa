"""The two jobs, step by step: ``backup`` writes one archive, ``restore`` brings one back.

Consistency. One REPEATABLE READ transaction exports a snapshot; in it the list of stored
objects is read, the storage backend stages each of their blobs (the local backend hard-links
them beside the blobs), and ``pg_dump --snapshot`` dumps exactly the same state. The archive is
then written from the staged files, with no database transaction open. Blobs are immutable (a
new upload is a new version) and bytes are removed only by the janitor, after a row stopped
pointing at them, so a staged blob stays readable however long the copy takes. What remains is
the short window between taking the snapshot and staging: if the janitor deletes a blob there
(its object was deleted or overwritten just after the snapshot), the whole backup is taken
again with a new snapshot, at most three times. A blob that is missing while a row still names
it means the storage lost it: that is an error, not a retry. Blobs that could not be linked
(another file system) are read from where they are, with the same check when one has gone.

Restore writes nothing until the archive's manifest, versions and member list have checked out
and the target is known to be fresh; the stored files and the dump are checked against their
SHA-256 before the database is touched. If restoring fails after that, what it created is
removed again, so it can simply be run once more.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from gatehouse.core.config import Settings
from gatehouse.ops.backup import database, files
from gatehouse.ops.backup.archive import DATABASE_MEMBER, check_members, extract_all, open_archive, write_archive
from gatehouse.ops.backup.errors import BackupError, Raced
from gatehouse.storage.backends import Backend, Staging

log = logging.getLogger("gatehouse.backup")

#: How many times a backup is taken again when the janitor deleted a blob right after the snapshot.
ATTEMPTS = 3


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
    if include_files:
        files.refuse_unless_copied(settings, restoring=False)
    data_dir = settings.data_dir.expanduser().resolve()
    store = files.open_store(settings) if include_files else None
    previous: list[str] = []
    try:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return asyncio.run(_backup_once(database_url, target, data_dir, store, attempt))
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise BackupError(f"reading the database failed: {exc}") from None
            except Raced as raced:
                log.warning("stored files were deleted right after the snapshot (%s); taking the backup again", raced)
                previous = raced.keys
        raise BackupError(
            f"objects kept being deleted while the backup was taken ({ATTEMPTS} attempts; "
            f"last: {', '.join(previous[:5])}); run it again when the storage is quieter"
        )
    finally:
        if store is not None:
            files.close_store(store)


async def _backup_once(
    database_url: str, target: Path, data_dir: Path, store: Backend | None, attempt: int
) -> BackupSummary:
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    work = Path(_mkdtemp(target.parent, f".{target.name}.work-"))
    staging: Staging | None = None
    try:
        dump_path = work / DATABASE_MEMBER
        conn = await database.connect(database_url)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                facts = await database.read_facts(conn)
                if store is not None and facts["keys"]:
                    staging = await files.stage(store, facts["keys"])
                    if staging.missing:
                        raise Raced(staging.missing)  # checked below, outside the transaction
                # pg_dump imports the snapshot, so it needs this transaction open until it has started;
                # keeping it open for the whole dump is simplest.
                await asyncio.to_thread(database.pg_dump, database_url, snapshot, dump_path)
        except Raced as raced:
            await database.raise_unless_raced(conn, raced.keys, facts["names"])
            raise
        finally:
            await conn.close()

        sources = staging.sources if staging is not None else {}
        try:
            manifest, size = write_archive(
                target, dump_path, data_dir / "keys.json", sources, facts, created_at, store is not None,
                database.tool_version("pg_dump"),
            )
        except Raced as raced:
            conn = await database.connect(database_url)
            try:
                await database.raise_unless_raced(conn, raced.keys, facts["names"])
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
            files_included=store is not None,
            attempts=attempt,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if staging is not None:
            staging.discard()


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
    with open_archive(archive) as tar:
        manifest, members = check_members(tar, archive)
        database.check_versions(manifest)
        files_included = bool(manifest["files_included"]) and bool(manifest["blobs"])
        if files_included:
            files.refuse_unless_copied(settings, restoring=True)
        if data_dir.exists() and not data_dir.is_dir():
            raise BackupError(f"{data_dir} is a file, not a data folder; choose another with --data-dir")

        created: list[Path] = []  # removed again if the restore fails
        if not data_dir.exists():
            data_dir.mkdir(parents=True)
            created.append(data_dir)
        store: Backend | None = None
        try:
            before = set(data_dir.iterdir())
            store = files.open_local_store(settings)  # the local backend makes its folder in the data folder
            created += sorted(set(data_dir.iterdir()) - before)
            _check_fresh_folder(data_dir, store, external=bool(settings.database_url))
            if settings.database_url:  # before the (long) extraction: an external target may refuse
                database.run_db(settings.database_url, database.check_target_only(settings.database_url, manifest))

            staging = files.restore_staging(store) if files_included and store is not None else None
            if staging is not None:
                created.append(staging.folder)
            dump_path = data_dir / f".restore-{secrets.token_hex(8)}.dump"
            created.append(dump_path)
            keys_body = extract_all(tar, members, manifest, dump_path, staging, archive)
            restored = database.restore_database(settings, data_dir, manifest, dump_path, keys_body, created)
            dump_path.unlink(missing_ok=True)
            if staging is not None and store is not None:
                files.adopt(store, staging)
                staging.discard()
        except BaseException:
            _remove(created)
            raise
        finally:
            if store is not None:
                files.close_store(store)

    warnings = restored.warnings
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
        users=restored.users,
        objects=restored.objects,
        files=len(manifest["blobs"]),
        file_bytes=sum(int(blob["size"]) for blob in manifest["blobs"]),
        migrations_applied=restored.migrations_applied,
        warnings=warnings,
    )


def _check_fresh_folder(data_dir: Path, store: Backend | None, *, external: bool) -> None:
    problems = []
    if (data_dir / "keys.json").exists():
        problems.append("keys.json")
    pgdata = data_dir / "postgres"
    if not external and pgdata.exists() and (not pgdata.is_dir() or any(pgdata.iterdir())):
        problems.append("a database (postgres/)")
    if store is not None and files.holds_files(store):
        problems.append(f"stored files ({store.location})")
    if problems:
        raise BackupError(
            f"the data folder {data_dir} already holds {' and '.join(problems)}; restore needs a fresh data folder: "
            "choose a new one with --data-dir (or GATEHOUSE_DATA_DIR)"
        )


def _remove(paths: list[Path]) -> None:
    for path in reversed(paths):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s after the failed restore: %s", path, exc)


def _mkdtemp(parent: Path, prefix: str) -> str:
    try:
        return tempfile.mkdtemp(prefix=prefix, dir=parent)
    except OSError as exc:
        raise BackupError(f"cannot write in {parent}: {exc.strerror or exc}") from None


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
