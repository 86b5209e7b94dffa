"""The feed outlives its connections, and the sweeper keeps the queue short without losing a change."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg

from gatehouse.core.db import Database
from gatehouse.realtime.feed import ChangeFeed
from tests.realtime.conftest import Received, published_table
from tests.support import eventually


async def queued(db: Database, table: str) -> int:
    count: int = await db.admin.fetchval("SELECT count(*) FROM realtime.changes WHERE table_name = $1", table)
    return count


async def test_the_feed_keeps_delivering_after_its_connections_are_killed(
    db: Database, database_url: str, got: Received
) -> None:
    """pg_terminate_backend on every connection of the feed, as a database restart would do."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3,
                                     server_settings={"application_name": "feed-under-test"})
    feed = ChangeFeed(pool, keepalive=0.2, retry_initial=0.05, retry_max=0.2, poll_interval=0.2)
    feed.subscribe(got)
    await feed.start()
    try:
        table = await published_table(db, "id int PRIMARY KEY")
        await db.admin.execute(f"INSERT INTO public.{table} VALUES (1)")
        await got.wait(table, 1)
        listener = feed.listener_pid
        assert listener is not None

        killed = await db.admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'feed-under-test'")
        assert killed >= 1
        await db.admin.execute(f"INSERT INTO public.{table} SELECT generate_series(2, 20)")  # while it reconnects
        await eventually(lambda: feed.listener_pid not in (None, listener))
        await db.admin.execute(f"INSERT INTO public.{table} SELECT generate_series(21, 40)")
        changes = await got.wait(table, 40)
        await feed.read()
    finally:
        await feed.stop()
        await pool.close()
    assert sorted(change.record["id"] for change in changes) == list(range(1, 41))
    assert max(Counter(change.id for change in got.changes).values()) == 1


async def test_the_sweeper_deletes_old_changes_in_batches(db: Database, got: Received) -> None:
    feed = ChangeFeed(db.admin, retention=0.05, sweep_interval=0.05, sweep_batch=2)
    feed.subscribe(got)
    await feed.start()
    try:
        table = await published_table(db, "id int PRIMARY KEY")
        await db.admin.execute(f"INSERT INTO public.{table} SELECT generate_series(1, 5)")
        await got.wait(table, 5)
        assert await queued(db, table) == 5
        deadline = asyncio.get_running_loop().time() + 10
        while await queued(db, table):
            assert asyncio.get_running_loop().time() < deadline, "the sweeper never deleted the changes"
            await asyncio.sleep(0.02)
        assert feed.swept >= 5
        await db.admin.execute(f"INSERT INTO public.{table} VALUES (6)")  # the feed goes on after a sweep
        await got.wait(table, 6)
    finally:
        await feed.stop()


async def test_a_change_committed_late_is_not_swept_before_it_is_read(
    db: Database, database_url: str, got: Received
) -> None:
    """The retention counts from when a change became visible, not from when it was made."""
    feed = ChangeFeed(db.admin, retention=0.2, sweep_interval=3600)  # swept by hand below
    table = await published_table(db, "id int PRIMARY KEY")
    slow = await asyncpg.connect(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute(f"INSERT INTO public.{table} VALUES (1)")
        await feed.sweep()  # remembers a snapshot in which the insert is not committed
        await asyncio.sleep(0.3)  # let that snapshot grow older than the retention
        await transaction.commit()
    finally:
        await slow.close()
    await feed.sweep()
    assert await queued(db, table) == 1  # the only snapshot old enough did not see the row
    await asyncio.sleep(0.3)
    await feed.sweep()
    assert await queued(db, table) == 0  # now it has been visible for longer than the retention
