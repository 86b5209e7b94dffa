"""LISTEN for a whole process on one pool connection, kept alive and taken again after the database comes back.

The schema watcher, the realtime change feed and bus, the keyring, the replica's write notices
and the mail sender each listen on their own channels. They share one ``ListenHub`` per process
(``Database.listener``), so a process holds one LISTEN connection, not one per user. That
matters beyond the pool's slots: PostgreSQL signals every listening backend of a database for
every NOTIFY, whatever its channels, and each signalled backend wakes and reads the queue; five
listeners per process made every write notice wake five backends per process.

Each user holds a :class:`HeldListener` on the hub: its channels, its callback, and what to do
after a reconnect (``on_reconnect``: notifications sent while disconnected are gone). The hub
takes a connection from ``pool`` when the first user connects and gives it back (after
UNLISTEN: the pool does not reset sessions) when the last one stops, so every user must stop
before the pool closes. While it has users, a keepalive query notices a silently dead peer, and a
lost connection is logged and re-established with back-off (``retry_initial`` doubling up to
``retry_max``); then every user's channels are listened to again and their ``on_reconnect`` run.
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


class ListenHub:
    """One LISTEN connection of ``pool`` shared by every :class:`HeldListener` made on it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        keepalive: float = 30.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self._pool = pool
        self._keepalive = keepalive
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._conn: Any = None  # a pool connection proxy while connected
        self._lost = asyncio.Event()
        self._on_lost: Callable[[object], None] = lambda _conn: None
        self._pid: int | None = None
        #: Every user, with whether its channels are listened to on the connection held now.
        self._users: dict[HeldListener, bool] = {}
        self._waiting = asyncio.Event()  # a user waits to be listened to: the supervisor's cue
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # connecting, releasing, adding and removing users: one at a time
        self._busy = asyncio.Lock()  # one query at a time on the held connection: keepalives and ``fetchval``

    @property
    def pid(self) -> int | None:
        """The backend pid of the LISTEN connection, None while disconnected (for diagnostics)."""
        return self._pid

    def listening(self, user: HeldListener) -> bool:
        return self._users.get(user, False) and self._conn is not None and not self._lost.is_set()

    async def fetchval(self, query: str, *, timeout: float) -> Any:
        """Run ``query`` on the held connection (so every notification sent before it began is
        delivered before its answer); ``asyncpg.InterfaceError`` while disconnected."""
        async with self._busy:
            if self._conn is None or self._lost.is_set():
                raise asyncpg.InterfaceError("the LISTEN connection is not connected")
            return await self._conn.fetchval(query, timeout=timeout)

    # -- users ----------------------------------------------------------------------------------

    async def join(self, user: HeldListener) -> None:
        """Listen to ``user``'s channels now, connecting first if need be; raises if the
        database cannot be reached (``user`` is then not kept)."""
        async with self._lock:
            if self.listening(user):
                return
            if self._conn is None or self._lost.is_set():
                await self._reconnect()  # the users already there are listened to again by the supervisor
            try:
                await self._listen(user)
            except BaseException:
                if not self._users:
                    await self._release()
                raise
            self._users[user] = True

    def supervise(self, user: HeldListener) -> None:
        """Keep ``user`` listening from now on, through reconnects; one not listening yet is
        taken in by the supervisor (with back-off), which then runs its ``on_reconnect``."""
        if not self._users.get(user, False):
            self._users[user] = False
            self._waiting.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(), name="gatehouse-listener")

    async def leave(self, user: HeldListener) -> None:
        """Stop ``user``'s callbacks (UNLISTEN the channels no other user wants); the last user
        to leave ends the supervisor and gives the connection back to the pool."""
        async with self._lock:
            was_listening = self._users.pop(user, False)
            if was_listening and self._conn is not None and not self._lost.is_set():
                await self._unlisten(user)
            if self._users:
                return
            task, self._task = self._task, None
        await cancel(task)
        async with self._lock:
            if not self._users:
                await self._release()
            elif self._task is None:  # a user came meanwhile: it needs a supervisor
                self._task = asyncio.create_task(self._supervise(), name="gatehouse-listener")

    # -- the connection -------------------------------------------------------------------------

    async def _reconnect(self) -> None:
        """Drop the connection held (if any), take a new one; every user is then waiting."""
        await self._release()
        conn = await self._pool.acquire()
        lost = asyncio.Event()
        self._conn, self._lost = conn, lost
        self._on_lost = lambda _conn: lost.set()
        try:
            conn.add_termination_listener(self._on_lost)
        except BaseException:
            await self._release()
            raise
        self._pid = conn.get_server_pid()

    async def _listen(self, user: HeldListener) -> None:
        added: list[str] = []
        try:
            for channel in user.channels:  # asyncpg sends LISTEN for the first callback of a channel
                await self._conn.add_listener(channel, user.on_notify)
                added.append(channel)
        except BaseException:
            with contextlib.suppress(Exception):
                for channel in added:
                    await self._conn.remove_listener(channel, user.on_notify)
            raise

    async def _unlisten(self, user: HeldListener) -> None:
        try:
            for channel in user.channels:  # and UNLISTEN for the last
                await self._conn.remove_listener(channel, user.on_notify)
        except (asyncpg.InterfaceError, asyncpg.PostgresError, OSError) as exc:
            log.debug("stopping the %s listener failed (%s); the connection is taken again", user.name, exc)
            self._lost.set()

    async def _release(self) -> None:
        """Give the connection back (UNLISTEN first: the pool does not reset sessions); every
        user is waiting afterwards."""
        conn, self._conn, self._pid = self._conn, None, None
        listened = [user for user, on in self._users.items() if on]
        for user in self._users:
            self._users[user] = False
        if self._users:
            self._waiting.set()  # the supervisor takes them in again
        if conn is None:
            return
        conn.remove_termination_listener(self._on_lost)
        if self._lost.is_set():  # dead or not answering: nothing to UNLISTEN, no slot to wait for
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()  # a closed pool connection frees its slot
            return
        try:
            async with asyncio.timeout(self._keepalive):
                for user in listened:
                    for channel in user.channels:
                        await conn.remove_listener(channel, user.on_notify)
            await self._pool.release(conn, timeout=5)
        except asyncpg.InterfaceError:
            pass  # it was closed, and so went back to the pool by itself
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the slot must be freed
            log.warning("could not return the LISTEN connection to the pool (%s); closing it", exc)
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()  # a closed pool connection frees its slot

    async def _hold(self) -> None:
        """Return when the connection is gone or a user waits; a keepalive query notices a
        silently dead peer."""
        while self._conn is not None and not self._lost.is_set() and not self._waiting.is_set():
            lost, waiting = asyncio.ensure_future(self._lost.wait()), asyncio.ensure_future(self._waiting.wait())
            try:
                done, _ = await asyncio.wait((lost, waiting), timeout=self._keepalive,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel(lost, waiting)
            if not done:
                async with self._busy:
                    await self._conn.fetchval("SELECT 1", timeout=self._keepalive)

    async def _take_in(self) -> list[HeldListener]:
        """Connect if need be, then listen for every waiting user; raises if the database is away."""
        async with self._lock:
            self._waiting.clear()
            if self._conn is None or self._lost.is_set():
                await self._reconnect()
            taken = []
            for user, on in list(self._users.items()):
                if not on:
                    await self._listen(user)
                    self._users[user] = True
                    taken.append(user)
            return taken

    async def _supervise(self) -> None:
        delay = self._retry_initial
        while True:
            held = self._conn is not None and not self._lost.is_set()
            try:
                await self._hold()
                if held and (self._conn is None or self._lost.is_set()):
                    log.warning("LISTEN connection lost; reconnecting")
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                log.warning("LISTEN connection failed (%s); reconnecting", str(exc) or type(exc).__name__)
                self._lost.set()
            lost = held and (self._conn is None or self._lost.is_set())
            while True:
                try:
                    taken = await self._take_in()
                    break
                except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                    lost = True
                    async with self._lock:
                        await self._release()
                    log.warning("LISTEN could not connect (%s); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
            if lost:
                log.info("LISTEN connection taken again")
            delay = self._retry_initial
            for user in taken:
                if user.on_reconnect is not None:
                    user.on_reconnect()


class HeldListener:
    """One user's channels on a :class:`ListenHub`: ``on_notify`` is called with each of their
    notifications, ``on_reconnect`` after the connection was taken again (or, for a user that
    was only supervised, when it is first listened to)."""

    def __init__(
        self,
        hub: ListenHub,
        channels: tuple[str, ...],
        on_notify: Notified,
        *,
        name: str,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.hub = hub
        self.channels = channels
        self.on_notify = on_notify
        self.name = name
        self.on_reconnect = on_reconnect

    def __repr__(self) -> str:
        return f"<HeldListener {self.name} {self.channels}>"

    @property
    def pid(self) -> int | None:
        """The backend pid of the LISTEN connection, None while this user is not listening."""
        return self.hub.pid if self.hub.listening(self) else None

    async def fetchval(self, query: str, *, timeout: float) -> Any:
        """``query`` on the LISTEN connection: every notification sent before it began is
        delivered before its answer. ``asyncpg.InterfaceError`` while disconnected."""
        if not self.hub.listening(self):
            raise asyncpg.InterfaceError(f"the {self.name} listener is not connected")
        return await self.hub.fetchval(query, timeout=timeout)

    async def connect(self) -> None:
        """LISTEN now (raising if the database cannot be reached); ``supervise()`` keeps it."""
        await self.hub.join(self)

    async def start(self, first: Callable[[], Awaitable[object]]) -> None:
        """LISTEN, then run ``first`` (a load or a read that must not miss what is notified
        meanwhile), then keep listening; a failure of either leaves nothing held."""
        await self.connect()
        try:
            await first()
        except BaseException:
            await self.stop()
            raise
        self.supervise()

    def supervise(self) -> None:
        """Keep listening from now on (connecting with back-off if not connected yet)."""
        self.hub.supervise(self)

    async def stop(self) -> None:
        await self.hub.leave(self)
