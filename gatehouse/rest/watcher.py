"""Keeps the data API's schema cache fresh without a restart and without a catalog read per request.

``SchemaWatcher`` LISTENs on ``gatehouse_schema`` (``gatehouse migrate`` notifies it) and on
PostgREST's ``pgrst`` channel (``NOTIFY pgrst, 'reload schema'``, which Supabase users already send
after DDL), and swaps in a freshly loaded ``SchemaCache`` after each burst of notifications.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from gatehouse.core.background import cancel
from gatehouse.core.listen import HeldListener, ListenHub
from gatehouse.rest.schema import SchemaCache

log = logging.getLogger("gatehouse.rest.schema")  # the name its log lines have always carried


class SchemaWatcher:
    """Holds the current ``SchemaCache`` and reloads it when the database says the schema changed.

    It listens on ``hub`` (the process's shared LISTEN connection; without one, a hub of its own on
    ``pool`` with the keepalive and back-off given), so ``stop()`` must come before the pool is
    closed. Reloads borrow a connection of ``pool`` briefly. After a lost connection is taken
    again the cache is reloaded, since notifications sent while disconnected are gone.
    """

    CHANNELS = ("gatehouse_schema", "pgrst")

    def __init__(
        self,
        pool: asyncpg.Pool,
        schemas: tuple[str, ...],
        *,
        on_reload: Callable[[SchemaCache], None] | None = None,
        debounce: float = 0.1,
        keepalive: float = 30.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        hub: ListenHub | None = None,
    ) -> None:
        self._pool = pool
        self._schemas = tuple(schemas)
        self._on_reload = on_reload
        self._debounce = debounce
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._cache: SchemaCache | None = None
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        hub = hub or ListenHub(pool, keepalive=keepalive, retry_initial=retry_initial, retry_max=retry_max)
        self._listener = HeldListener(hub, self.CHANNELS, self._notified, name="schema",
                                      on_reconnect=self._dirty.set)  # notifications sent meanwhile are lost: reload
        self._tasks: list[asyncio.Task[None]] = []
        #: Completed loads, the first one included.
        self.reloads = 0

    @property
    def cache(self) -> SchemaCache:
        if self._cache is None:
            raise RuntimeError("schema watcher is not started")
        return self._cache

    @property
    def listener_pid(self) -> int | None:
        """The backend pid of the LISTEN connection, None while disconnected (for diagnostics)."""
        return self._listener.pid

    async def start(self) -> None:
        """LISTEN, then load (in that order, so a change made in between is not missed)."""
        if self._tasks:
            raise RuntimeError("schema watcher is already started")
        await self._listener.start(self.reload)
        self._tasks = [asyncio.create_task(self._reload_when_dirty(), name="gatehouse-schema-reloader")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel(*tasks)
        await self._listener.stop()

    async def reload(self) -> SchemaCache:
        """Load the cache now and swap it in; raises (keeping the old cache) if the load fails."""
        async with self._lock:
            async with self._pool.acquire() as conn:
                cache = await SchemaCache.load(conn, self._schemas)
            self._cache = cache
            self.reloads += 1
        log.info("schema cache loaded in %.1f ms: %r", cache.load_seconds * 1000, cache)
        if self._on_reload is not None:
            try:
                self._on_reload(cache)
            except Exception:  # a faulty callback must not stop the watcher
                log.exception("schema cache on_reload callback failed")
        return cache

    # -- notifications -------------------------------------------------------------------------

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        # PostgREST's channel also carries 'reload config', which is not ours to act on.
        if channel == "pgrst" and payload not in ("", "reload schema"):
            return
        log.debug("schema change notified on %s (%r)", channel, payload)
        self._dirty.set()

    async def _reload_when_dirty(self) -> None:
        """Reload once per burst: wait until no notification came for ``debounce`` seconds."""
        delay = self._retry_initial
        while True:
            await self._dirty.wait()
            # A steady stream of notifications still gets a reload every ten quiet periods.
            deadline = asyncio.get_running_loop().time() + 10 * self._debounce
            while self._dirty.is_set() and asyncio.get_running_loop().time() < deadline:
                self._dirty.clear()
                await asyncio.sleep(self._debounce)
            self._dirty.clear()
            try:
                await self.reload()
                delay = self._retry_initial
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any failure
                log.warning("schema reload failed (%s); keeping the previous cache, retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                self._dirty.set()
