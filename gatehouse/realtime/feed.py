"""The database change feed: reads ``realtime.changes`` and hands each committed change to subscribers.

``ChangeFeed`` holds one LISTEN connection on ``gatehouse_realtime`` (re-established with
back-off when lost, as the schema watcher does) and also reads once a second, so a lost
notification delays a change by a second at most. Each read fetches, in one statement, the rows
past the feed's position and the rows of its open gaps (``gaps.py``), with the snapshot's xmin
and xmax. A change is delivered once per process, when it is committed; changes to the same row
in the order they were committed. After a reconnect the feed goes on from its position: nothing
is lost while the queue still holds the rows. A new feed starts at the queue's end.

A sweeper deletes rows once they were committed longer ago than the retention: it remembers a
snapshot per sweep and deletes only rows visible in one at least that old, so a row committed
late by a long transaction is never swept before a reader could see it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import orjson

from gatehouse.core.background import cancel
from gatehouse.core.listen import HeldListener, ListenHub
from gatehouse.realtime.gaps import Gaps
from gatehouse.realtime.models import Change, Column

log = logging.getLogger("gatehouse.realtime.feed")

CHANNEL = "gatehouse_realtime"

#: A subscriber: called with each batch of changes, in order, one batch at a time.
Callback = Callable[[list[Change]], Awaitable[None]]

_SNAPSHOT = """
    pg_snapshot_xmin(snap.s)::text::bigint AS xmin, pg_snapshot_xmax(snap.s)::text::bigint AS xmax
"""

_START = f"""
WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
     top AS MATERIALIZED (SELECT coalesce(max(id), 0) AS id FROM realtime.changes)
SELECT top.id AS position, {_SNAPSHOT},
    ARRAY(SELECT g FROM generate_series(greatest(top.id - $1, 0) + 1, top.id) AS g
          EXCEPT SELECT c.id FROM realtime.changes c WHERE c.id > top.id - $1) AS unseen
FROM snap, top
"""

_READ = f"""
WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s)
SELECT {_SNAPSHOT}, c.id, c.schema_name, c.table_name, c.type,
    to_char(c.commit_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS commit_timestamp,
    c.record::text AS record, c.old_record::text AS old_record, c.old_full, c.primary_key::text AS primary_key,
    cols.columns
FROM snap
LEFT JOIN LATERAL (
    SELECT u.* FROM (
        SELECT * FROM realtime.changes WHERE id > $1
        UNION ALL
        SELECT ch.* FROM unnest($2::bigint[], $3::bigint[]) AS g(low, high)
        JOIN realtime.changes ch ON ch.id BETWEEN g.low AND g.high
    ) AS u
    ORDER BY u.id
    LIMIT $4
) AS c ON true
LEFT JOIN LATERAL (
    SELECT json_agg(json_build_object('name', a.attname, 'type', t.typname) ORDER BY a.attnum)::text AS columns
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = c.relid AND a.attnum > 0 AND NOT a.attisdropped
) AS cols ON c.id IS NOT NULL
ORDER BY c.id
"""

_MARK = "SELECT pg_current_snapshot()::text AS snapshot, (SELECT coalesce(max(id), 0) FROM realtime.changes) AS mark"

_SWEEP = """
DELETE FROM realtime.changes WHERE id IN (
    SELECT id FROM realtime.changes
    WHERE id <= $1 AND pg_visible_in_snapshot(txid, $2::text::pg_snapshot)
    ORDER BY id
    LIMIT $3
)
"""


class ChangeFeed:
    """Delivers every committed change of the published tables to this process's subscribers.

    ``pool`` is the admin pool (the queue is closed to the request roles). The feed listens on
    ``hub`` (the process's shared LISTEN connection; without one, a hub of its own on ``pool``
    with the keepalive and back-off given), so ``stop()`` must come before the pool closes.

    While ``wanted()`` is false (no channel of this process subscribes to changes) the feed does
    not read: each read costs the database a scan of the new rows, in every process.
    ``resume()`` places it at the queue's end again before a first subscription is confirmed.
    Subscribers are awaited one after another for each batch: a slow one delays the others and
    the feed, so a subscriber should queue the changes and return.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retention: float = 600.0,
        poll_interval: float = 1.0,
        batch: int = 500,
        sweep_interval: float = 60.0,
        sweep_batch: int = 1000,
        start_window: int = 10_000,
        keepalive: float = 30.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        hub: ListenHub | None = None,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        self._pool = pool
        self._wanted = wanted
        self._idle = False  # skipping reads while nobody wants changes: the position is stale
        self._retention = retention
        self._poll_interval = poll_interval
        self._batch = batch
        self._sweep_interval = sweep_interval
        self._sweep_batch = sweep_batch
        self._start_window = start_window
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._subscribers: list[Callback] = []
        self._position: int | None = None
        self._gaps = Gaps()
        self._read_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        hub = hub or ListenHub(pool, keepalive=keepalive, retry_initial=retry_initial, retry_max=retry_max)
        self._listener = HeldListener(hub, (CHANNEL,), self._notified, name="realtime change feed",
                                      on_reconnect=self._wake.set)  # notifications sent meanwhile are lost: read now
        self._tasks: list[asyncio.Task[None]] = []
        self._marks: collections.deque[tuple[float, str, int]] = collections.deque()
        #: Rows the sweeper has deleted since the feed started.
        self.swept = 0

    # -- the public surface --------------------------------------------------------------------

    @property
    def position(self) -> int | None:
        """The highest queue id read so far (None before ``start``)."""
        return self._position

    @property
    def idle(self) -> bool:
        """Reads are skipped: no subscriber wants changes (see ``wanted``)."""
        return self._idle

    @property
    def open_gaps(self) -> int:
        """Ids passed but not yet seen (changes of transactions still open, or rolled back)."""
        return len(self._gaps)

    @property
    def listener_pid(self) -> int | None:
        """The backend pid of the LISTEN connection, None while disconnected (for diagnostics)."""
        return self._listener.pid

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback`` with every later batch of changes; returns the function that stops it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def start(self) -> None:
        """LISTEN, then place the feed at the queue's end (in that order: nothing slips between)."""
        if self._tasks:
            raise RuntimeError("change feed is already started")
        await self._listener.start(self._place)
        log.info("realtime change feed starts after change %d", self._position)
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="gatehouse-realtime-reader"),
            asyncio.create_task(self._sweep_forever(), name="gatehouse-realtime-sweeper"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel(*tasks)
        await self._listener.stop()

    async def resume(self) -> None:
        """Read from now on: after reads were skipped, start again at the queue's end (what was
        committed before a subscription is not for it)."""
        async with self._read_lock:
            if self._idle:
                await self._place()
                self._idle = False

    async def read(self) -> list[Change]:
        """Read once now and deliver what is new; returns the changes delivered."""
        async with self._read_lock:
            if self._position is None:
                raise RuntimeError("change feed is not started")
            changes = await self._fetch()
            if changes:
                await self._deliver(changes)
            return changes

    async def sweep(self) -> int:
        """Remember a snapshot, then delete the rows committed more than ``retention`` seconds ago."""
        now = asyncio.get_running_loop().time()
        row = await self._pool.fetchrow(_MARK)
        assert row is not None
        self._marks.append((now, row["snapshot"], row["mark"]))
        old: tuple[float, str, int] | None = None
        while self._marks and self._marks[0][0] <= now - self._retention:
            old = self._marks.popleft()
        if old is None:
            return 0
        self._marks.appendleft(old)  # still the newest old enough, until a newer one is
        deleted = 0
        while True:
            status = await self._pool.execute(_SWEEP, old[2], old[1], self._sweep_batch)
            count = int(status.rsplit(" ", 1)[1])
            deleted += count
            if count < self._sweep_batch:
                break
        self.swept += deleted
        if deleted:
            log.debug("realtime queue: swept %d changes", deleted)
        return deleted

    # -- reading -------------------------------------------------------------------------------

    async def _place(self) -> None:
        row = await self._pool.fetchrow(_START, self._start_window)
        assert row is not None
        self._position = row["position"]
        self._gaps = Gaps()
        self._gaps.add_ids(row["unseen"], row["xmax"])
        self._gaps.forget_ended(row["xmin"])
        log.debug("realtime change feed placed after change %d", self._position)

    async def _fetch(self) -> list[Change]:
        assert self._position is not None
        lows, highs = self._gaps.ranges
        rows = await self._pool.fetch(_READ, self._position, lows, highs, self._batch)
        xmin, xmax = rows[0]["xmin"], rows[0]["xmax"]
        found = [row for row in rows if row["id"] is not None]
        fresh = [row["id"] for row in found if row["id"] > self._position]
        changes: list[Change] = []
        for row in found:
            if row["id"] <= self._position and not self._gaps.fill(row["id"]):
                continue  # read before (cannot happen while ids only grow; never deliver twice)
            changes.append(_change(row))
        if fresh:
            self._gaps.add_missing(self._position, fresh, fresh[-1], xmax)
            self._position = fresh[-1]
        full = len(found) >= self._batch
        self._gaps.forget_ended(xmin, below=found[-1]["id"] if full else None)
        return changes

    async def _deliver(self, changes: list[Change]) -> None:
        for callback in list(self._subscribers):
            try:
                await callback(changes)
            except Exception:  # a faulty subscriber must not stop the feed or the others
                log.exception("realtime change subscriber failed")

    async def _read_forever(self) -> None:
        delay = self._retry_initial
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()
            if not self._wanted():
                self._idle = True
                continue
            try:
                await self.resume()
                while len(await self.read()) >= self._batch:
                    pass  # more may be waiting
                delay = self._retry_initial
            except Exception as exc:  # noqa: BLE001 - the feed must outlive any failure
                log.warning("realtime change feed could not read (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the feed must outlive any failure
                log.warning("realtime queue sweep failed (%s); trying again in %.0f s", exc, self._sweep_interval)

    # -- notifications -------------------------------------------------------------------------

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake.set()


def _change(row: asyncpg.Record) -> Change:
    columns = orjson.loads(row["columns"]) if row["columns"] else []
    return Change(
        id=row["id"],
        schema=row["schema_name"],
        table=row["table_name"],
        type=row["type"],
        commit_timestamp=row["commit_timestamp"],
        columns=tuple(Column(column["name"], column["type"]) for column in columns),
        record=orjson.loads(row["record"]) if row["record"] else {},
        old_record=orjson.loads(row["old_record"]) if row["old_record"] else {},
        old_full=row["old_full"],
        primary_key=orjson.loads(row["primary_key"]) if row["primary_key"] else {},
    )
