"""What one Gatehouse process tells the others about realtime, through PostgreSQL alone.

Every process LISTENs on ``gatehouse_realtime_bus``. A broadcast or a presence change made on one
process is sent there as a NOTIFY (``{"o": node, ...}``; one over NOTIFY's 8,000 bytes is stored
in ``realtime.bus`` and the NOTIFY carries its id); a broadcast made in SQL (``realtime.send``)
arrives as ``{"m": message id}`` from the trigger on ``realtime.messages``. Each process hands
what it hears to the callback it was given, except its own notes (it delivered those locally).
It listens on the process's shared LISTEN connection (``Database.listener``), which is taken
again after the database restarts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from gatehouse.core.db import Database
from gatehouse.core.listen import HeldListener

log = logging.getLogger("gatehouse.realtime")

CHANNEL = "gatehouse_realtime_bus"
#: A NOTIFY payload must stay under 8,000 bytes; past this the note goes through realtime.bus.
_INLINE = 7000

Note = dict[str, Any]


class Bus:
    def __init__(self, database: Database, on_note: Callable[[Note], Awaitable[None]]) -> None:
        self.node = str(uuid.uuid4())
        self._database = database
        self._on_note = on_note
        self._listener: HeldListener | None = None  # made at start: it needs the open pool
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._database.listen_pool  # opened by the app before realtime starts; LISTEN needs the server itself

    async def start(self) -> None:
        self._listener = HeldListener(self._database.listener, (CHANNEL,), self._notified, name="realtime bus")
        await self._listener.connect()
        self._listener.supervise()

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()

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
