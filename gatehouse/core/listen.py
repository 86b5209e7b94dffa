"""One pool connection held for LISTEN, kept alive and taken again after the database comes back.

The schema watcher, the realtime change feed and the realtime bus each hold one. A keepalive
query notices a silently dead peer; a lost connection is logged and re-established with back-off
(``retry_initial`` doubling up to ``retry_max``); then ``on_reconnect`` runs, since notifications
sent while disconnected are gone. The connection comes from (and goes back to) ``pool``, so
``stop()`` must come before the pool closes; on the way back it UNLISTENs, as the pool does not
reset sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from gatehouse.core.background import cancel

log = logging.getLogger("gatehouse.listen")

#: asyncpg's listener callback: (connection, backend pid, channel, payload).
Notified = Callable[[Any, int, str, object], None]


class HeldListener:
    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: tuple[str, ...],
        on_notify: Notified,
        *,
        name: str,
        on_reconnect: Callable[[], None] | None = None,
        keepalive: float = 30.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self._pool = pool
        self._channels = channels
        self._on_notify = on_notify
        self._name = name
        self._on_reconnect = on_reconnect
        self._keepalive = keepalive
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._conn: Any = None  # a pool connection proxy while connected
        self._lost = asyncio.Event()
        self._on_lost: Callable[[object], None] = lambda _conn: None
        self._pid: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()  # one query at a time on the held connection: keepalives and ``fetchval``

    @property
    def pid(self) -> int | None:
        """The backend pid of the LISTEN connection, None while disconnected (for diagnostics)."""
        return self._pid

    async def fetchval(self, query: str, *, timeout: float) -> Any:
        """Run ``query`` on the held connection (so every notification sent before it began is
        delivered before its answer); ``asyncpg.InterfaceError`` while disconnected."""
        async with self._busy:
            if self._conn is None or self._lost.is_set():
                raise asyncpg.InterfaceError(f"the {self._name} listener is not connected")
            return await self._conn.fetchval(query, timeout=timeout)

    async def connect(self) -> None:
        """LISTEN now (raising if the database cannot be reached); ``supervise()`` keeps it."""
        conn = await self._pool.acquire()
        lost = asyncio.Event()
        self._conn, self._lost = conn, lost
        self._on_lost = lambda _conn: lost.set()
        try:
            conn.add_termination_listener(self._on_lost)
            for channel in self._channels:
                await conn.add_listener(channel, self._on_notify)
        except BaseException:
            await self.release()
            raise
        self._pid = conn.get_server_pid()

    async def start(self, first: Callable[[], Awaitable[object]]) -> None:
        """LISTEN, then run ``first`` (a load or a read that must not miss what is notified
        meanwhile), then keep the connection; a failure of either leaves nothing held."""
        await self.connect()
        try:
            await first()
        except BaseException:
            await self.release()
            raise
        self.supervise()

    def supervise(self) -> None:
        """Keep the connection from now on (a task until ``stop``)."""
        self._task = asyncio.create_task(self._supervise(), name=f"gatehouse-{self._name}-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        await self.release()  # a task cancelled before it ran never reached its own clean-up

    async def release(self) -> None:
        conn, self._conn, self._pid = self._conn, None, None
        if conn is None:
            return
        try:
            conn.remove_termination_listener(self._on_lost)
            for channel in self._channels:  # UNLISTEN: the pool does not reset sessions
                await conn.remove_listener(channel, self._on_notify)
            await self._pool.release(conn, timeout=5)
        except asyncpg.InterfaceError:
            pass  # it was closed, and so went back to the pool by itself
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the slot must be freed
            log.warning("could not return the %s listener connection to the pool (%s); closing it", self._name, exc)
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()  # a closed pool connection frees its slot

    async def _hold(self) -> None:
        """Return when the connection is gone; a keepalive query notices a silently dead peer."""
        while self._conn is not None and not self._lost.is_set():
            try:
                await asyncio.wait_for(self._lost.wait(), self._keepalive)
            except TimeoutError:
                async with self._busy:
                    await self._conn.fetchval("SELECT 1", timeout=self._keepalive)

    async def _supervise(self) -> None:
        delay = self._retry_initial
        while True:
            try:
                await self._hold()
                log.warning("%s listener connection lost; reconnecting", self._name)
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                log.warning("%s listener connection failed (%s); reconnecting", self._name, exc)
            finally:
                await self.release()
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                try:
                    await self.connect()
                    break
                except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                    log.warning("%s listener could not reconnect (%s); retrying in %.1f s", self._name, exc, delay)
            log.info("%s listener reconnected", self._name)
            delay = self._retry_initial
            if self._on_reconnect is not None:
                self._on_reconnect()
