"""The trigger follows the publication: on a table once it is published, off once it is not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gatehouse.core.db import Database
from gatehouse.realtime.feed import ChangeFeed
from gatehouse.realtime.models import Column
from gatehouse.realtime.publication import published_tables, sync_publication, table_columns
from tests.realtime.conftest import Received, new_table, published_table


async def triggered(db: Database) -> set[str]:
    """The tables carrying the capture trigger, as schema.table."""
    rows = await db.admin.fetch("SELECT format('%I.%I', n.nspname, c.relname) AS rel FROM pg_trigger t "
                                "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE t.tgname = 'gatehouse_realtime' AND t.tgparentid = 0")
    return {row["rel"] for row in rows}


@pytest.fixture
async def without_event_trigger(db: Database) -> AsyncIterator[None]:
    """As on a server where the migrations did not run as a superuser: only sync_publication syncs."""
    await db.admin.execute("ALTER EVENT TRIGGER gatehouse_realtime_publication DISABLE")
    yield
    await db.admin.execute("ALTER EVENT TRIGGER gatehouse_realtime_publication ENABLE")


async def test_alter_publication_puts_the_trigger_on_and_off_at_once(db: Database) -> None:
    table = await published_table(db, "id int PRIMARY KEY")
    assert f"public.{table}" in await triggered(db)
    assert await sync_publication(db.admin) == []  # nothing left to do
    await db.admin.execute(f"ALTER PUBLICATION supabase_realtime DROP TABLE public.{table}")
    assert f"public.{table}" not in await triggered(db)


async def test_sync_publication_follows_the_publication(db: Database, without_event_trigger: None) -> None:
    first, second = new_table(), new_table()
    qualified = {f"public.{first}", f"public.{second}"}
    await db.admin.execute(f"CREATE TABLE public.{first} (id int PRIMARY KEY); "
                           f"CREATE TABLE public.{second} (id int PRIMARY KEY); "
                           f"ALTER PUBLICATION supabase_realtime ADD TABLE public.{first}, public.{second}")
    assert qualified.isdisjoint(await triggered(db))
    assert await sync_publication(db.admin) == [f"+public.{first}", f"+public.{second}"]
    assert qualified <= await triggered(db)
    assert {("public", first), ("public", second)} <= await published_tables(db.admin)

    await db.admin.execute(f"ALTER PUBLICATION supabase_realtime DROP TABLE public.{first}")
    assert await sync_publication(db.admin) == [f"-public.{first}"]
    assert await triggered(db) & qualified == {f"public.{second}"}
    assert await sync_publication(db.admin) == []


async def test_unpublished_tables_changes_stop(db: Database, got: Received, feed: ChangeFeed) -> None:
    table = await published_table(db, "id int PRIMARY KEY")
    sentinel = await published_table(db, "id int PRIMARY KEY")
    await db.admin.execute(f"INSERT INTO public.{table} VALUES (1)")
    await got.wait(table, 1)
    await db.admin.execute(f"ALTER PUBLICATION supabase_realtime DROP TABLE public.{table}; "
                           f"INSERT INTO public.{table} VALUES (2); INSERT INTO public.{sentinel} VALUES (1)")
    await got.wait(sentinel, 1)
    assert [change.record for change in got.of(table)] == [{"id": 1}]


async def test_a_publication_for_all_tables_covers_the_exposed_schemas(db: Database) -> None:
    table = new_table()
    await db.admin.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY); "
                           "DROP PUBLICATION supabase_realtime; CREATE PUBLICATION supabase_realtime FOR ALL TABLES")
    try:
        await sync_publication(db.admin, ("public",))
        covered = await triggered(db)
        assert f"public.{table}" in covered
        assert not any(name.startswith(("auth.", "storage.", "gatehouse.", "realtime.")) for name in covered)
        assert ("auth", "users") not in await published_tables(db.admin)
    finally:
        await db.admin.execute("DROP PUBLICATION supabase_realtime; CREATE PUBLICATION supabase_realtime")
    assert f"public.{table}" not in await triggered(db)  # the event trigger took them off again
    assert await sync_publication(db.admin, ("public",)) == []


async def test_table_columns_for_checking_filters(db: Database) -> None:
    table = new_table()
    await db.admin.execute(f"CREATE TABLE public.{table} (id int8 PRIMARY KEY, secret text, body text); "
                           f"GRANT SELECT (id, body) ON public.{table} TO anon")
    everything = [Column("id", "int8"), Column("secret", "text"), Column("body", "text")]
    assert await table_columns(db.admin, "public", table) == everything
    assert await table_columns(db.admin, "public", table, "anon") == [Column("id", "int8"), Column("body", "text")]
    assert await table_columns(db.admin, "public", table, "authenticated") == []
    assert await table_columns(db.admin, "public", "no_such_table") is None
