"""What one Gatehouse process tells the others about realtime, through PostgreSQL alone.

Every process LISTENs on ``gatehouse_realtime_bus``. A broadcast or a presence change made on one
process is sent there as a NOTIFY (``{"o": node, ...}``; one over NOTIFY's 8,000 bytes is stored
in ``realtime.bus`` and the NOTIFY carries its id); a broadcast made in SQL (``realtime.send``)
arrives as ``{"m": message id}`` from the trigger on ``realtime.messages``. Each process hands
what it hears to the callback it was given, except its own notes (it delivered those locally).
The LISTEN connection reconnects after the database restarts, as the schema watcher's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from gatehouse.core.db import Database

log = logging.getLogger("gatehouse.realtime")

CHANNEL = "gatehouse_realtime_bus"
#: A NOTIFY payload must stay under 8,000 bytes; past this the note goes through realtime.bus.
_INLINE = 7000
_RETRY = (0.1, 5.0)  # first and longest wait before listening again
_KEEPALIVE = 10.0

Note = dict[str, Any]


class Bus:
    def __init__(self, database: Database, on_note: Callable[[Note], Awaitable[None]]) -> None:
        self.node = str(uuid.uuid4())
        self._database = database
        self._on_note = on_note
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lost = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._database.admin  # opened by the app before realtime starts

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._release()

    async def publish(self, note: Note) -> None:
        """Tell the other processes; a big note is stored and sent by id. Errors are logged: a
        lost database loses the note for other processes, never the local delivery."""
        note = {"o": self.node, **note}
        body = orjson.dumps(note).decode()
        try:
            async with self._pool.acquire() as conn:
                if len(body.encode()) > _INLINE:
                    bus_id = await conn.fetchval("INSERT INTO realtime.bus (body) VALUES ($1) RETURNING id", note)
                    body = orjson.dumps({"o": self.node, "id": bus_id}).decode()
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, body)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("realtime: could not tell the other processes (%s)", exc)

    async def sweep(self, older_than_seconds: float = 60) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM realtime.bus WHERE inserted_at < now() - make_interval(secs => $1)",
                               older_than_seconds)

    # -- hearing -------------------------------------------------------------------------------

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        task = asyncio.create_task(self._hear(str(payload)))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _hear(self, payload: str) -> None:
        try:
            note = orjson.loads(payload)
            if not isinstance(note, dict) or note.get("o") == self.node:
                return
            if "id" in note:
                async with self._pool.acquire() as conn:  # jsonb comes back decoded (the pool's codec)
                    note = await conn.fetchval("SELECT body FROM realtime.bus WHERE id = $1", int(note["id"]))
                if not isinstance(note, dict):
                    return
            elif "m" in note:
                async with self._pool.acquire() as conn:
                    row = await conn.fetchrow(
                        "SELECT topic, event, payload, private FROM realtime.messages WHERE id = $1",
                        uuid.UUID(str(note["m"])),
                    )
                if row is None:
                    return
                note = {"b": {"topic": row["topic"], "private": row["private"], "event": row["event"] or "",
                              "payload": row["payload"]}}
            await self._on_note(note)
        except Exception:  # one bad note must not stop the others
            log.exception("realtime: could not handle a note from another process")

    # -- the LISTEN connection ---------------------------------------------------------------

    async def _listen(self) -> None:
        conn = await self._pool.acquire()
        try:
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(lambda _c: self._lost.set())
        except BaseException:
            await self._pool.release(conn)
            raise
        self._conn = conn
        self._lost.clear()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.remove_listener(CHANNEL, self._notified)
            await self._pool.release(conn, timeout=5)
        except Exception:  # noqa: BLE001 - closed already, or broken: free the slot either way
            with contextlib.suppress(Exception):
                conn.terminate()

    async def _keep_listening(self) -> None:
        """Hold the LISTEN connection (a keepalive query notices a silently dead peer), and take a
        new one when it is lost. Notes sent while disconnected are lost: broadcast and presence
        are live signals, and presence is read back from realtime.presences at each join."""
        delay = _RETRY[0]
        while not self._stopping:
            try:
                while self._conn is not None and not self._lost.is_set():
                    try:
                        await asyncio.wait_for(self._lost.wait(), _KEEPALIVE)
                    except TimeoutError:
                        await self._conn.fetchval("SELECT 1", timeout=_KEEPALIVE)
            except Exception as exc:  # noqa: BLE001 - the bus must outlive any failure
                log.warning("realtime: bus connection failed (%s); reconnecting", exc)
            await self._release()
            while not self._stopping:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY[-1])
                try:
                    await self._listen()
                    delay = _RETRY[0]
                    break
                except Exception as exc:  # noqa: BLE001 - the bus must outlive any failure
                    log.warning("realtime: bus could not reconnect (%s)", exc)
