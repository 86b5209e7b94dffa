"""The watcher reloads the schema cache when told to (NOTIFY gatehouse_schema / NOTIFY pgrst) or when
its connection comes back, and gives its connection back when stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gatehouse.core.db import Database
from gatehouse.rest.schema import SchemaCache
from gatehouse.rest.watcher import SchemaWatcher
from tests.support import eventually


@pytest.fixture
async def watcher(db: Database) -> AsyncIterator[SchemaWatcher]:
    async with db.admin.acquire() as conn:
        await conn.execute("DROP SCHEMA IF EXISTS watched CASCADE; CREATE SCHEMA watched")
    seen: list[SchemaCache] = []
    w = SchemaWatcher(
        db.admin, ("watched",), on_reload=seen.append, debounce=0.05, keepalive=0.05,
        retry_initial=0.05, retry_max=0.5,
    )
    await w.start()
    assert seen == [w.cache] and w.reloads == 1
    yield w
    await w.stop()
    assert db.admin.get_idle_size() == db.admin.get_size()  # every connection returned


async def test_reload_on_gatehouse_notify(watcher: SchemaWatcher, db: Database) -> None:
    assert watcher.cache.tables("watched") == []
    async with db.admin.acquire() as conn:
        await conn.execute("CREATE TABLE watched.a (id integer PRIMARY KEY)")
        assert watcher.cache.table("watched", "a") is None  # no catalog read without a notification
        await conn.execute("NOTIFY gatehouse_schema, 'reload'")
    await eventually(lambda: watcher.cache.table("watched", "a") is not None)


async def test_reload_on_postgrest_notify(watcher: SchemaWatcher, db: Database) -> None:
    async with db.admin.acquire() as conn:
        await conn.execute("CREATE TABLE watched.b (id integer PRIMARY KEY)")
        await conn.execute("NOTIFY pgrst, 'reload config'")  # not a schema change
        await conn.execute("NOTIFY pgrst, 'reload schema'")
    await eventually(lambda: watcher.cache.table("watched", "b") is not None)
    assert watcher.reloads == 2


async def test_a_burst_of_notifications_is_one_reload(watcher: SchemaWatcher, db: Database) -> None:
    async with db.admin.acquire() as conn:
        await conn.execute("CREATE TABLE watched.c (id integer PRIMARY KEY)")
        await conn.execute("SELECT pg_notify('gatehouse_schema', i::text) FROM generate_series(1, 20) i")
        for _ in range(5):
            await conn.execute("NOTIFY pgrst, 'reload schema'")
    await eventually(lambda: watcher.cache.table("watched", "c") is not None)
    await asyncio.sleep(0.2)  # a few debounce periods: no further reloads come
    assert watcher.reloads <= 3


async def test_forced_reload(watcher: SchemaWatcher, db: Database) -> None:
    async with db.admin.acquire() as conn:
        await conn.execute("CREATE TABLE watched.d (id integer PRIMARY KEY)")
    cache = await watcher.reload()
    assert cache is watcher.cache
    assert cache.table("watched", "d") is not None


async def test_survives_a_lost_connection(watcher: SchemaWatcher, db: Database) -> None:
    pid = watcher.listener_pid
    assert pid is not None
    async with db.admin.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await conn.execute("CREATE TABLE watched.while_down (id integer PRIMARY KEY)")
    # Reconnected and reloaded without a notification: the ones sent meanwhile were lost.
    await eventually(lambda: watcher.cache.table("watched", "while_down") is not None)
    await eventually(lambda: watcher.listener_pid not in (None, pid))  # the reload may come first
    async with db.admin.acquire() as conn:
        await conn.execute("CREATE TABLE watched.after (id integer PRIMARY KEY); NOTIFY gatehouse_schema")
    await eventually(lambda: watcher.cache.table("watched", "after") is not None)


async def test_stop_returns_the_connection(db: Database) -> None:
    pool = db.admin
    w = SchemaWatcher(pool, ("public",))
    with pytest.raises(RuntimeError):
        _ = w.cache
    await w.start()
    try:
        with pytest.raises(RuntimeError):
            await w.start()
    finally:
        await w.stop()
    assert w.listener_pid is None
    async with pool.acquire() as conn:  # reset on release: nothing is listening any more
        assert await conn.fetch("SELECT pg_listening_channels()") == []
