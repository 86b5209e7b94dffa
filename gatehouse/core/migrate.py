"""Plain-SQL migrations: ordered files, each applied once, in its own transaction.

Built-in files live in ``gatehouse/migrations`` (``0001_roles.sql`` ...); a user folder's
``*.sql`` files run after them, in name order. Applied files are recorded with a checksum in
``gatehouse.schema_migrations``; a recorded file that has since changed stops the run rather
than leaving the database and the files disagreeing. A session advisory lock serialises
processes that start together.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from gatehouse.core.db import Conn

log = logging.getLogger("gatehouse.migrate")

#: Arbitrary but fixed: the advisory lock key all Gatehouse processes agree on.
LOCK_KEY = 0x6761746568  # "gateh"

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS gatehouse;
CREATE TABLE IF NOT EXISTS gatehouse.schema_migrations (
    source text NOT NULL,
    version text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, version)
);
"""


#: Built-in files changed after release in a way that changes nothing where they were applied
#: (a step made conditional): the checksums they were released with, still accepted. ``migrate``
#: records the current checksum in their place.
RELEASED_CHECKSUMS: dict[str, frozenset[str]] = {
    # 0001: NOINHERIT and BYPASSRLS set only when missing, so that a non-superuser owner can run
    # it on roles a superuser made (deploy/postgres/bootstrap.sql).
    "0001_roles": frozenset({"3d0ad8e46213293574342a887260f5e1944bf8356f8619bbf41008234131f1f4"}),
}


class MigrationError(Exception):
    """A migration failed or no longer matches what was applied; the message names the file."""


@dataclass(frozen=True)
class Migration:
    source: str  # "builtin" or "user"
    version: str  # the file name without .sql
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.source}/{self.version}.sql"


def builtin_migrations() -> list[Migration]:
    folder = resources.files("gatehouse") / "migrations"
    files = sorted((entry for entry in folder.iterdir() if entry.name.endswith(".sql")), key=lambda e: e.name)
    return [Migration("builtin", entry.name[:-4], entry.read_text(encoding="utf-8")) for entry in files]


def folder_migrations(folder: Path) -> list[Migration]:
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} does not exist or is not a folder")
    files = sorted(path for path in folder.iterdir() if path.suffix == ".sql" and path.is_file())
    return [Migration("user", path.stem, path.read_text(encoding="utf-8")) for path in files]


def starter_removal() -> Migration:
    """Takes the built-in user-management starter out again (``GATEHOUSE_STARTER_SCHEMA=none``)."""
    sql = (resources.files("gatehouse") / "migrations" / "starter" / "remove.sql").read_text(encoding="utf-8")
    return Migration("starter", "remove", sql)


def all_migrations(user_dir: Path | None, *, starter: bool = True) -> list[Migration]:
    """The built-in migrations, the starter's removal when it is turned off, then the user's folder."""
    removal = [] if starter else [starter_removal()]
    return builtin_migrations() + removal + (folder_migrations(user_dir) if user_dir else [])


def released(migration: Migration, checksum: str) -> bool:
    """Whether ``checksum`` is one a built-in ``migration`` was released with (see RELEASED_CHECKSUMS)."""
    return migration.source == "builtin" and checksum in RELEASED_CHECKSUMS.get(migration.version, ())


async def pending(conn: Conn, migrations: list[Migration]) -> list[Migration]:
    """Migrations not yet applied; raises MigrationError if an applied one has changed."""
    exists = await conn.fetchval("SELECT to_regclass('gatehouse.schema_migrations') IS NOT NULL")
    applied: dict[tuple[str, str], str] = {}
    if exists:
        rows = await conn.fetch("SELECT source, version, checksum FROM gatehouse.schema_migrations")
        applied = {(row["source"], row["version"]): row["checksum"] for row in rows}
    todo = []
    for migration in migrations:
        checksum = applied.get((migration.source, migration.version))
        if checksum is None:
            todo.append(migration)
        elif checksum != migration.checksum and not released(migration, checksum):
            raise MigrationError(
                f"{migration.label} was changed after it was applied; "
                "put changes in a new migration file instead of editing an applied one"
            )
    return todo


async def migrate(conn: Conn, user_dir: Path | None = None, *, starter: bool = True) -> list[str]:
    """Apply every pending migration; return the labels of those applied."""
    migrations = all_migrations(user_dir, starter=starter)
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_BOOTSTRAP)
        for version, checksums in RELEASED_CHECKSUMS.items():
            current = next((m.checksum for m in migrations if m.source == "builtin" and m.version == version), None)
            if current is None:
                continue
            await conn.execute(
                "UPDATE gatehouse.schema_migrations SET checksum = $2 "
                "WHERE source = 'builtin' AND version = $1 AND checksum = ANY($3::text[])",
                version, current, sorted(checksums),
            )
        done = []
        for migration in await pending(conn, migrations):
            log.info("applying migration %s", migration.label)
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO gatehouse.schema_migrations (source, version, checksum) VALUES ($1, $2, $3)",
                        migration.source,
                        migration.version,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.label} failed and was rolled back: {exc}") from None
            done.append(migration.label)
        if done:
            await conn.execute("NOTIFY gatehouse_schema, 'reload'")
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
