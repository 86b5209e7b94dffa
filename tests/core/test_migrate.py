"""Migrations: ordered SQL files, applied once each, in a transaction, under an advisory lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from gatehouse.core.migrate import RELEASED_CHECKSUMS, MigrationError, builtin_migrations, migrate, pending


@pytest.fixture
async def conn(empty_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(empty_database_url)
    yield connection
    await connection.close()


def test_builtin_files_are_zero_padded_and_ordered() -> None:
    versions = [migration.version for migration in builtin_migrations()]
    assert versions == sorted(versions)
    assert versions[:3] == ["0001_roles", "0002_auth", "0003_profiles"]
    assert all(version[:4].isdigit() and version[4] == "_" for version in versions)


async def test_fresh_database_gets_everything_once(conn: asyncpg.Connection, tmp_path: Path) -> None:
    (tmp_path / "0001_notes.sql").write_text("CREATE TABLE public.notes (id int PRIMARY KEY);")
    (tmp_path / "0002_more.sql").write_text("ALTER TABLE public.notes ADD COLUMN body text;")
    (tmp_path / "README.txt").write_text("not a migration")
    applied = await migrate(conn, tmp_path)
    builtin = [f"builtin/{m.version}.sql" for m in builtin_migrations()]
    assert applied == [*builtin, "user/0001_notes.sql", "user/0002_more.sql"]
    rows = await conn.fetch("SELECT source, version FROM gatehouse.schema_migrations ORDER BY applied_at, version")
    assert len(rows) == len(applied)
    assert await conn.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes'") == 2

    assert await migrate(conn, tmp_path) == []  # nothing twice
    (tmp_path / "0003_later.sql").write_text("CREATE INDEX ON public.notes (body);")
    assert await migrate(conn, tmp_path) == ["user/0003_later.sql"]


async def test_changed_applied_file_stops_the_run(conn: asyncpg.Connection, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE public.a (id int);")
    await migrate(conn, tmp_path)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE public.a (id bigint);")
    with pytest.raises(MigrationError, match="user/0001_a.sql was changed after it was applied"):
        await migrate(conn, tmp_path)
    assert await pending(conn, builtin_migrations()) == []  # the built-ins still match


async def test_a_released_checksum_of_a_changed_builtin_is_accepted_and_brought_up_to_date(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """0001 was made safe for a non-superuser owner after release: a database that applied the
    released file starts as before, and its record is updated; any other checksum still stops it."""
    await migrate(conn)
    (old,) = RELEASED_CHECKSUMS["0001_roles"]
    current = next(m.checksum for m in builtin_migrations() if m.version == "0001_roles")
    await conn.execute("UPDATE gatehouse.schema_migrations SET checksum = $1 WHERE version = '0001_roles'", old)
    assert await pending(conn, builtin_migrations()) == []
    assert await migrate(conn) == []
    assert await conn.fetchval("SELECT checksum FROM gatehouse.schema_migrations WHERE version = '0001_roles'") == current
    await conn.execute("UPDATE gatehouse.schema_migrations SET checksum = 'edited' WHERE version = '0001_roles'")
    with pytest.raises(MigrationError, match="builtin/0001_roles.sql was changed"):
        await migrate(conn)
    await conn.execute("UPDATE gatehouse.schema_migrations SET checksum = $1 WHERE version = '0001_roles'", current)


async def test_failing_migration_rolls_back_whole(conn: asyncpg.Connection, tmp_path: Path) -> None:
    await migrate(conn)
    (tmp_path / "0001_half.sql").write_text("CREATE TABLE public.half (id int); SELECT * FROM no_such_table;")
    with pytest.raises(MigrationError, match="user/0001_half.sql failed and was rolled back"):
        await migrate(conn, tmp_path)
    assert await conn.fetchval("SELECT to_regclass('public.half')") is None
    assert await conn.fetchval("SELECT count(*) FROM gatehouse.schema_migrations WHERE version = '0001_half'") == 0


async def test_missing_user_folder_is_a_clear_error(conn: asyncpg.Connection, tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        await migrate(conn, tmp_path / "nope")


async def test_processes_starting_together_do_not_race(pg_cluster: object, template_url: str) -> None:
    """Five connections migrate one empty database at once: each file is applied exactly once."""
    from tests.conftest import create_database, drop_database

    url = await create_database(pg_cluster, "template1", "race")  # type: ignore[arg-type]
    try:
        connections = [await asyncpg.connect(url) for _ in range(5)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in connections))
        finally:
            for c in connections:
                await c.close()
        assert sorted(len(r) for r in results) == [0, 0, 0, 0, len(builtin_migrations())]
    finally:
        await drop_database(pg_cluster, url)  # type: ignore[arg-type]
