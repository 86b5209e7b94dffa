"""One LISTEN connection per process: every listener shares it, through reconnects, and the last
one to stop gives it back to the pool without a channel left listened to."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from gatehouse.core.db import Database
from gatehouse.core.embedded import free_port
from gatehouse.core.listen import HeldListener, ListenHub
from tests.support import RunningServer, eventually


class Heard:
    """What one listener heard, and how often it was told to catch up."""

    def __init__(self) -> None:
        self.payloads: list[tuple[str, str]] = []
        self.reconnects = 0

    def notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self.payloads.append((channel, str(payload)))

    def caught_up(self) -> None:
        self.reconnects += 1


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Two connections at most: the hub's, and one for the test's own statements."""
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=2)
    yield pool
    await pool.close()


def hub_on(pool: asyncpg.Pool) -> ListenHub:
    return ListenHub(pool, keepalive=0.2, retry_initial=0.05, retry_max=0.2)


def listener(hub: ListenHub, channels: tuple[str, ...], name: str) -> tuple[HeldListener, Heard]:
    heard = Heard()
    return HeldListener(hub, channels, heard.notified, name=name, on_reconnect=heard.caught_up), heard


async def notify(db: Database, channel: str, payload: str) -> None:
    await db.admin.execute("SELECT pg_notify($1, $2)", channel, payload)


async def listening_channels(pool: asyncpg.Pool, pid: int) -> set[str]:
    """The channels the backend ``pid`` listens to, asked on that very connection when it is idle in ``pool``."""
    connections = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        for conn in connections:
            if conn.get_server_pid() == pid:
                return {row[0] for row in await conn.fetch("SELECT pg_listening_channels()")}
        raise AssertionError(f"backend {pid} is not in the pool")
    finally:
        for conn in connections:
            await pool.release(conn)


async def test_listeners_share_one_connection_and_hear_only_their_channels(db: Database, pool: asyncpg.Pool) -> None:
    hub = hub_on(pool)
    schema, schema_heard = listener(hub, ("t_schema", "t_pgrst"), "schema")
    feed, feed_heard = listener(hub, ("t_feed",), "feed")
    also_feed, also_feed_heard = listener(hub, ("t_feed",), "second feed")
    for user in (schema, feed, also_feed):
        await user.start(lambda: asyncio.sleep(0))
    try:
        assert schema.pid is not None and schema.pid == feed.pid == also_feed.pid == hub.pid
        assert pool.get_size() == 1, "one connection for every listener"
        await notify(db, "t_pgrst", "reload")
        await notify(db, "t_feed", "change 1")
        await eventually(lambda: len(feed_heard.payloads) == 1 == len(also_feed_heard.payloads))
        await eventually(lambda: len(schema_heard.payloads) == 1)
        assert schema_heard.payloads == [("t_pgrst", "reload")]
        assert feed_heard.payloads == also_feed_heard.payloads == [("t_feed", "change 1")]

        await feed.stop()  # the channel stays listened to: another user wants it
        assert feed.pid is None and also_feed.pid == hub.pid
        await notify(db, "t_feed", "change 2")
        await eventually(lambda: len(also_feed_heard.payloads) == 2)
        assert feed_heard.payloads == [("t_feed", "change 1")]
        assert schema.pid is not None
        await also_feed.stop()  # the last user of t_feed: UNLISTEN
        pid = hub.pid
        assert pid is not None
        before = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        assert before == 1
    finally:
        await schema.stop()
    assert hub.pid is None and schema.pid is None
    assert await listening_channels(pool, pid) == set(), "the pool does not reset sessions: UNLISTEN first"


async def test_a_lost_connection_is_taken_again_for_every_listener(db: Database, pool: asyncpg.Pool,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    hub = hub_on(pool)
    users = [listener(hub, (f"t_lost_{n}",), f"user {n}") for n in range(3)]
    for user, _ in users:
        await user.connect()
        user.supervise()
    try:
        first = hub.pid
        assert first is not None
        with caplog.at_level(logging.WARNING, logger="gatehouse.listen"):
            await db.admin.execute("SELECT pg_terminate_backend($1)", first)
            await eventually(lambda: all(heard.reconnects == 1 for _, heard in users))
        assert hub.pid not in (None, first)
        assert all(user.pid == hub.pid for user, _ in users)
        assert any("LISTEN connection lost" in r.getMessage() for r in caplog.records)
        for n in range(3):
            await notify(db, f"t_lost_{n}", "after")
        await eventually(lambda: all(heard.payloads == [(f"t_lost_{n}", "after")]
                                     for n, (_, heard) in enumerate(users)))
        assert pool.get_size() == 1, "the dead connection was not kept"
    finally:
        for user, _ in users:
            await user.stop()
    assert pool.get_idle_size() == pool.get_size()


async def test_a_silently_dead_peer_is_noticed_by_the_keepalive(db: Database, pool: asyncpg.Pool) -> None:
    """A connection that stops answering (its backend process stopped, the socket still open)
    fails the keepalive query: the hub gives it up and takes another."""
    hub = hub_on(pool)
    user, heard = listener(hub, ("t_stalled",), "stalled")
    await user.start(lambda: asyncio.sleep(0))
    first = hub.pid
    assert first is not None
    os.kill(first, signal.SIGSTOP)  # the backend runs on this machine: the test runs as root or as its owner
    try:
        await eventually(lambda: heard.reconnects >= 1)
        assert hub.pid not in (None, first)
        await notify(db, "t_stalled", "heard")
        await eventually(lambda: ("t_stalled", "heard") in heard.payloads)
    finally:
        os.kill(first, signal.SIGCONT)
        await user.stop()


async def test_supervised_without_a_database_it_waits_then_joins(caplog: pytest.LogCaptureFixture) -> None:
    """The mail sender only supervises: a database that is away is retried in the background,
    and stopping works whatever the state."""
    pool = await asyncpg.create_pool(f"postgresql://nobody:x@127.0.0.1:{free_port()}/none", min_size=0, max_size=1)
    hub = ListenHub(pool, retry_initial=0.02, retry_max=0.05)
    user, heard = listener(hub, ("t_away",), "away")
    try:
        with pytest.raises(OSError):
            await user.connect()
        assert user.pid is None
        with caplog.at_level(logging.WARNING, logger="gatehouse.listen"):
            user.supervise()
            await eventually(lambda: sum("could not connect" in r.getMessage() for r in caplog.records) >= 3)
        assert heard.reconnects == 0
        with pytest.raises(asyncpg.InterfaceError):
            await user.fetchval("SELECT 1", timeout=1)
        await user.stop()
        assert user.pid is None
    finally:
        await pool.close()


async def test_a_late_listener_is_taken_in_and_told_to_catch_up(db: Database, pool: asyncpg.Pool) -> None:
    hub = hub_on(pool)
    first, _ = listener(hub, ("t_first",), "first")
    late, late_heard = listener(hub, ("t_late",), "late")
    await first.start(lambda: asyncio.sleep(0))
    try:
        late.supervise()  # not connected by itself: the supervisor takes it in
        await eventually(lambda: late_heard.reconnects == 1)
        assert late.pid == first.pid
        await notify(db, "t_late", "x")
        await eventually(lambda: late_heard.payloads == [("t_late", "x")])
        assert await late.fetchval("SELECT 41 + 1", timeout=5) == 42
    finally:
        await late.stop()
        await first.stop()
    assert pool.get_size() == pool.get_idle_size()


async def test_a_failed_first_step_leaves_nothing_held(db: Database, pool: asyncpg.Pool) -> None:
    hub = hub_on(pool)
    user, _ = listener(hub, ("t_fail",), "failing")

    async def fails() -> None:
        raise RuntimeError("the first load failed")

    with pytest.raises(RuntimeError):
        await user.start(fails)
    assert hub.pid is None and user.pid is None
    assert pool.get_size() == pool.get_idle_size()


def test_a_process_serves_with_two_connections_per_pool(server_factory: Callable[..., RunningServer]) -> None:
    """Schema watcher, change feed, bus, keyring and mail sender listen on one connection: a pool
    of two leaves one for requests (with five LISTEN connections the process never became ready)."""
    server = server_factory(env={"GATEHOUSE_DB_POOL_MAX_SIZE": "2", "GATEHOUSE_SMTP_HOST": "127.0.0.1",
                                 "GATEHOUSE_SMTP_PORT": str(free_port())})
    headers: dict[str, Any] = {"apikey": server.keys.publishable_key}
    ready = httpx.get(f"{server.url}/health/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    signed_up = httpx.post(f"{server.url}/auth/v1/signup", headers=headers, timeout=30,
                           json={"email": "two-connections@example.com", "password": "correct horse battery"})
    assert signed_up.status_code == 200, signed_up.text
    rest = httpx.get(f"{server.url}/rest/v1/", headers=headers, timeout=10)
    assert rest.status_code == 200, rest.text
