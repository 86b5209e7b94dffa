"""The change feed: what a published table's changes look like, and that each committed one arrives once."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import asyncpg
import pytest

from gatehouse.core.db import Database
from gatehouse.realtime.feed import ChangeFeed
from tests.realtime.conftest import Received, new_table, published_table
from tests.support import eventually

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TODO_COLUMNS = "id int4 PRIMARY KEY, title text NOT NULL, done boolean DEFAULT false, owner uuid, " \
               "due timestamptz, meta jsonb"


async def test_insert_update_delete_arrive_in_the_upstream_shape(db: Database, feed: ChangeFeed, got: Received) -> None:
    table = await published_table(db, TODO_COLUMNS)
    await db.admin.execute(f"INSERT INTO public.{table} (id, title, owner, due, meta) VALUES "
                           "(1, 'milk', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2030-01-02 03:04:05+00', '{\"n\": [1]}')")
    await db.admin.execute(f"UPDATE public.{table} SET done = true WHERE id = 1")
    await db.admin.execute(f"DELETE FROM public.{table} WHERE id = 1")
    insert, update, delete = await got.wait(table, 3)

    columns = [{"name": "id", "type": "int4"}, {"name": "title", "type": "text"}, {"name": "done", "type": "bool"},
               {"name": "owner", "type": "uuid"}, {"name": "due", "type": "timestamptz"}, {"name": "meta", "type": "jsonb"}]
    row = {"id": 1, "title": "milk", "done": False, "owner": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
           "due": "2030-01-02T03:04:05+00:00", "meta": {"n": [1]}}
    data = insert.data()
    assert TIMESTAMP.match(data.pop("commit_timestamp"))
    assert data == {"schema": "public", "table": table, "type": "INSERT", "columns": columns, "record": row,
                    "errors": None}

    data = update.data()
    assert TIMESTAMP.match(data.pop("commit_timestamp"))
    assert data == {"schema": "public", "table": table, "type": "UPDATE", "columns": columns,
                    "record": row | {"done": True}, "old_record": {"id": 1}, "errors": None}

    data = delete.data()
    assert TIMESTAMP.match(data.pop("commit_timestamp"))
    assert data == {"schema": "public", "table": table, "type": "DELETE", "columns": columns,
                    "old_record": {"id": 1}, "errors": None}
    assert insert.id < update.id < delete.id
    assert insert.commit_timestamp <= update.commit_timestamp <= delete.commit_timestamp


async def test_an_unpublished_table_sends_nothing(db: Database, feed: ChangeFeed, got: Received) -> None:
    quiet = new_table()
    await db.admin.execute(f"CREATE TABLE public.{quiet} (id int PRIMARY KEY)")
    loud = await published_table(db, "id int PRIMARY KEY")
    await db.admin.execute(f"INSERT INTO public.{quiet} VALUES (1)")
    await db.admin.execute(f"INSERT INTO public.{loud} VALUES (1)")
    await got.wait(loud, 1)  # read after the quiet table's insert committed
    assert got.of(quiet) == []


async def test_replica_identity_full_sends_the_whole_old_row(db: Database, feed: ChangeFeed, got: Received) -> None:
    plain = await published_table(db, "id int PRIMARY KEY, body text")
    full = await published_table(db, "id int PRIMARY KEY, body text")
    await db.admin.execute(f"ALTER TABLE public.{full} REPLICA IDENTITY FULL")
    for table in (plain, full):
        await db.admin.execute(f"INSERT INTO public.{table} VALUES (7, 'secret'); "
                               f"UPDATE public.{table} SET body = 'public' WHERE id = 7; "
                               f"DELETE FROM public.{table} WHERE id = 7")
    _, plain_update, plain_delete = await got.wait(plain, 3)
    _, full_update, full_delete = await got.wait(full, 3)

    assert plain_update.old_record == {"id": 7} and plain_delete.old_record == {"id": 7}
    assert not plain_delete.old_full
    assert full_update.old_record == {"id": 7, "body": "secret"}
    assert full_delete.old_record == {"id": 7, "body": "public"} and full_delete.old_full
    # Under RLS the deleted row cannot be checked, so such subscribers get its primary key only.
    assert full_delete.data(row_security=True)["old_record"] == {"id": 7}
    assert full_delete.data(row_security=False)["old_record"] == {"id": 7, "body": "public"}


async def test_a_row_past_notifys_limit_arrives_whole(db: Database, feed: ChangeFeed, got: Received) -> None:
    table = await published_table(db, "id int PRIMARY KEY, body text")
    body = "".join(chr(0x41 + i % 26) for i in range(50_000))
    await db.admin.execute(f"INSERT INTO public.{table} VALUES (1, $1)", body)
    (change,) = await got.wait(table, 1)
    assert change.record == {"id": 1, "body": body}


async def test_a_table_without_primary_key_sends_upstreams_error(db: Database, feed: ChangeFeed, got: Received) -> None:
    table = await published_table(db, "body text")
    # PostgreSQL itself refuses UPDATE and DELETE on a published table with no replica identity.
    await db.admin.execute(f"ALTER TABLE public.{table} REPLICA IDENTITY FULL")
    await db.admin.execute(f"INSERT INTO public.{table} VALUES ('x'); DELETE FROM public.{table}")
    insert, delete = await got.wait(table, 2)
    assert insert.primary_key == {}
    assert insert.data()["errors"] == ["Error 400: Bad Request, no primary key"]
    assert insert.data()["record"] == {}
    assert delete.data()["old_record"] == {"body": "x"} and delete.data()["errors"] is None
    assert delete.data(row_security=True)["old_record"] == {}


async def test_a_transaction_that_commits_last_is_delivered_once(
    db: Database, database_url: str, feed: ChangeFeed, got: Received
) -> None:
    """The first writer takes the lower id but commits after the second: both arrive, once each."""
    table = await published_table(db, "id int PRIMARY KEY")
    first = await asyncpg.connect(database_url)
    try:
        async with first.transaction():
            await first.execute(f"INSERT INTO public.{table} VALUES (1)")
            await db.admin.execute(f"INSERT INTO public.{table} VALUES (2)")  # commits at once
            await got.wait(table, 1)
            assert feed.open_gaps >= 1  # the first writer's id, passed but not yet visible
            assert [change.record["id"] for change in got.of(table)] == [2]
        (_, late) = await got.wait(table, 2)
    finally:
        await first.close()
    assert late.record == {"id": 1}
    await eventually(lambda: feed.open_gaps == 0)
    await db.admin.execute(f"INSERT INTO public.{table} VALUES (3)")
    await got.wait(table, 3)
    await feed.read()  # one more read finds nothing new
    assert Counter(change.id for change in got.changes).most_common(1)[0][1] == 1
    assert [change.record["id"] for change in got.of(table)] == [2, 1, 3]


async def test_a_rolled_back_transactions_gap_is_forgotten(
    db: Database, database_url: str, feed: ChangeFeed, got: Received
) -> None:
    table = await published_table(db, "id int PRIMARY KEY")
    doomed = await asyncpg.connect(database_url)
    try:
        transaction = doomed.transaction()
        await transaction.start()
        await doomed.execute(f"INSERT INTO public.{table} SELECT generate_series(100, 199)")
        await db.admin.execute(f"INSERT INTO public.{table} VALUES (1)")
        await got.wait(table, 1)
        assert feed.open_gaps >= 100
        await transaction.rollback()
    finally:
        await doomed.close()
    await eventually(lambda: feed.open_gaps == 0)
    await db.admin.execute(f"INSERT INTO public.{table} VALUES (2)")
    await got.wait(table, 2)
    assert [change.record["id"] for change in got.of(table)] == [1, 2]


async def test_changes_to_one_row_arrive_in_commit_order(db: Database, feed: ChangeFeed, got: Received) -> None:
    table = await published_table(db, "id int PRIMARY KEY, n int")
    await db.admin.execute(f"INSERT INTO public.{table} VALUES (1, 0)")
    for _ in range(20):
        await db.admin.execute(f"UPDATE public.{table} SET n = n + 1 WHERE id = 1")
    changes = await got.wait(table, 21)
    assert [change.record["n"] for change in changes] == list(range(21))


async def test_a_new_feed_starts_at_the_end_and_a_busy_queue_drains(db: Database, got: Received) -> None:
    table = await published_table(db, "id int PRIMARY KEY")
    await db.admin.execute(f"INSERT INTO public.{table} VALUES (0)")  # history: not replayed
    feed = ChangeFeed(db.admin, batch=7)
    feed.subscribe(got)
    await feed.start()
    try:
        await db.admin.execute(f"INSERT INTO public.{table} SELECT generate_series(1, 50)")
        changes = await got.wait(table, 50)
    finally:
        await feed.stop()
    assert [change.record["id"] for change in changes] == list(range(1, 51))
    assert max(len(batch) for batch in got.batches) <= 7


async def test_no_reads_while_no_channel_wants_changes(db: Database, got: Received) -> None:
    """With no postgres_changes subscriber in the process the feed does not read the queue (a scan
    per process and change for nothing); ``resume()`` places it at the end before a subscription
    is confirmed, so it gets what is committed after, and nothing from before."""
    table = await published_table(db, "id int PRIMARY KEY")
    wanted = False
    feed = ChangeFeed(db.admin, poll_interval=0.05, wanted=lambda: wanted)
    feed.subscribe(got)
    await feed.start()
    try:
        await db.admin.execute(f"INSERT INTO public.{table} VALUES (1)")
        started_at = feed.position
        for _ in range(5):  # notified and polled, yet no read
            await db.admin.execute(f"INSERT INTO public.{table} VALUES (1 + (SELECT max(id) FROM public.{table}))")
        queue_end = await db.admin.fetchval("SELECT max(id) FROM realtime.changes")
        await asyncio.sleep(0.3)  # several polls: a read would have moved the position
        assert feed.position == started_at < queue_end
        wanted = True
        await feed.resume()
        assert feed.position is not None and feed.position >= queue_end
        await db.admin.execute(f"INSERT INTO public.{table} VALUES (100)")
        (change,) = await got.wait(table, 1)
        assert change.record == {"id": 100}
        wanted = False
        await eventually(lambda: feed.idle)
        wanted = True
        await feed.resume()
        await db.admin.execute(f"INSERT INTO public.{table} VALUES (101)")
        await got.wait(table, 2)
    finally:
        await feed.stop()
    assert [c.record["id"] for c in got.of(table)] == [100, 101]


async def test_a_failing_subscriber_does_not_stop_the_others(db: Database, feed: ChangeFeed, got: Received) -> None:
    async def broken(changes: object) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe = feed.subscribe(broken)
    table = await published_table(db, "id int PRIMARY KEY")
    await db.admin.execute(f"INSERT INTO public.{table} VALUES (1)")
    await got.wait(table, 1)
    unsubscribe()
    await db.admin.execute(f"INSERT INTO public.{table} VALUES (2)")
    await got.wait(table, 2)


async def test_the_queue_is_closed_to_the_request_roles(db: Database, request_pool: asyncpg.Pool) -> None:
    async with request_pool.acquire() as conn:
        for role in ("anon", "authenticated", "service_role"):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {role}")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch("SELECT * FROM realtime.changes")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM realtime.changes")  # authenticator itself
