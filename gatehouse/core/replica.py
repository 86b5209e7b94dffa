"""The read replica (``GATEHOUSE_DATABASE_READ_URL``): which reads may go there, and when.

A read may be served by the replica when the replica answers, lags the primary by less than
``GATEHOUSE_DATABASE_READ_MAX_LAG`` and has replayed the caller's last write. The last rule is
read-your-writes across processes, with nothing shared but PostgreSQL:

* Every write made for a caller (``Database.run_as`` and ``as_user`` without ``readonly``)
  sends ``pg_notify('gatehouse_writes', <caller>)`` inside its own transaction, so the notice
  exists exactly when the write committed. A change to a user's sessions or account (sign-in,
  sign-out, ban, deletion: 0035_replica_writes.sql) is a write by that user too, so a new
  session is never checked against a replica that lacks it and an ended one is refused at once.
  The caller is the token's ``sub``, or its role (``anon``, ``service_role``) when it has none.
* Every process LISTENs on that channel (a connection to the primary itself) and keeps, per
  caller, a primary WAL position at or past that caller's last write. A caller's read goes to
  the primary until the replica's replay position has passed it; no window to tune.
* A notice can still be on its way when the caller's next request reaches another process. So
  before routing a read to the replica, a process asks the primary for its WAL insert position
  on the listening connection (``sync``): PostgreSQL signals listeners when a write commits,
  before the writer hears back, and delivers their notices before answering the listener's
  next query. Every write the caller saw acknowledged is then known here. The sync is the
  cost of a replica read on the primary: one trivial statement per round of reads, shared by
  every read that arrives while the previous one is in flight (under load, far fewer than one
  per read); reads that must go to the primary pay it too.
* A notice heard between reads is settled by a sync of its own ``_SETTLE`` seconds later (one
  for all notices heard meanwhile), so the position kept for a caller is that of their write,
  give or take ``_SETTLE``, not that of whatever read comes next, however much later.

A monitor samples the primary's position and the replica's replay position every
``_INTERVAL`` seconds: the lag is the age of the oldest primary sample the replica has not yet
replayed (exact on an idle primary, where ``now() - pg_last_xact_replay_timestamp()`` would grow
for ever). A replica that fails, lags too far, or is no longer in recovery serves no reads until
it is back. While the listening connection is lost, notices are lost: every read goes to the
primary until the replica has replayed past the primary's position at the reconnection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import asyncpg

from gatehouse.core.background import cancel
from gatehouse.core.listen import HeldListener, ListenHub

log = logging.getLogger("gatehouse.db.replica")

#: The channel every caller's write is announced on (the payload: the caller's key).
CHANNEL = "gatehouse_writes"
#: Seconds between two samples of the primary's and the replica's positions.
_INTERVAL = 0.5
#: Seconds after a notice before a sync settles it (and every notice heard meanwhile): at most
#: 1 / _SETTLE syncs a second come from notices, however many writes there are.
_SETTLE = 0.05
#: The primary's WAL insert position: past the end of every record written so far, committed
#: asynchronously or not. The replica's replay position: the end of the last record replayed.
_PRIMARY_POSITION = "SELECT (pg_catalog.pg_current_wal_insert_lsn() - '0/0')::int8"
_REPLICA_POSITION = ("SELECT CASE WHEN pg_catalog.pg_is_in_recovery() "
                     "THEN (pg_catalog.pg_last_wal_replay_lsn() - '0/0')::int8 END")
#: WAL page size and the headers an insert position may stand just past at a page's start.
_PAGE = 8192
_PAGE_HEADERS = (24, 40)
_LONGEST_KEY = 64


def caller_key(claims: Mapping[str, Any] | None) -> str:
    """Whose writes a read must see: the token's user, or its role for callers without one."""
    if not claims:
        return "anon"
    return str(claims.get("sub") or claims.get("role") or "anon")[:_LONGEST_KEY]


def _written(position: int) -> int:
    """An insert position just past a page header: the WAL ends at the page's start."""
    return position - position % _PAGE if position % _PAGE in _PAGE_HEADERS else position


class Replica:
    """The replica's pool and what this process knows of its progress and of callers' writes."""

    def __init__(self, pool: asyncpg.Pool, hub: ListenHub, *, max_lag: float, timeout: float) -> None:
        self.pool = pool
        self._max_lag = max_lag
        self._timeout = timeout
        self._listener = HeldListener(hub, (CHANNEL,), self._notified, name="replica writes",
                                      on_reconnect=self._blind)
        self._writes: dict[str, int] = {}  # caller -> a primary position at or past their last write
        self._pending: set[str] = set()  # callers heard since the last sync was sent
        self._in_flight: set[str] = set()  # callers heard before the sync in flight was sent
        self._everyone = 0  # every read waits for this position (set after the notices were lost)
        self._blind_pending = True  # notices before the first LISTEN are unknown too
        self._replayed = 0
        # One sample per _INTERVAL: an hour's worth, far more than any lag bound needs.
        self._samples: deque[tuple[float, int]] = deque(maxlen=int(3600 / _INTERVAL))
        self._state = "starting"
        self._next: asyncio.Future[int] | None = None
        self._syncing: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._settling: asyncio.TimerHandle | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """LISTEN on the primary (raising if it cannot), then watch the replica; a replica that
        is down now is not an error: reads go to the primary until it answers."""
        await self._listener.connect()
        self._listener.supervise()
        self._monitor = asyncio.create_task(self._watch(), name="gatehouse-replica-monitor")

    async def stop(self) -> None:
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None
        tasks, self._monitor, self._syncing = (self._monitor, self._syncing), None, None
        await cancel(*tasks)
        await self._listener.stop()

    @property
    def state(self) -> str:
        """``ok``, ``lagging``, ``unavailable`` or ``starting``, for the readiness check."""
        return self._state

    # -- routing ---------------------------------------------------------------------------------

    async def serves(self, claims: Mapping[str, Any] | None) -> bool:
        """May this caller's read go to the replica now? False whenever in doubt."""
        if self._state != "ok":
            return False
        try:
            await asyncio.shield(self.sync())  # bounded: the sync's query has the connect timeout
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.debug("no replica read: the primary's position is unknown (%s)", exc)
            return False
        key = caller_key(claims)
        if key in self._pending or key in self._in_flight:
            return False
        return self._replayed >= max(self._writes.get(key, 0), self._everyone)

    def failed(self, error: BaseException) -> None:
        """A read on the replica found it gone: no more reads there until the monitor sees it back."""
        if self._state != "unavailable":
            log.warning("read replica unavailable (%s); reads go to the primary", error)
        self._state = "unavailable"

    def sync(self) -> asyncio.Future[int]:
        """The primary's position from a query sent after this call, on the listening connection;
        every notice of a write committed before this call has been heard when it resolves."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.create_task(self._sync_rounds(), name="gatehouse-replica-sync")
        return future

    async def _sync_rounds(self) -> None:
        while self._next is not None:
            future, self._next = self._next, None
            heard, self._pending, self._in_flight = self._pending, set(), self._pending
            blind, self._blind_pending = self._blind_pending, False
            try:
                position = int(await self._listener.fetchval(_PRIMARY_POSITION, timeout=self._timeout))
            except BaseException as exc:
                self._pending |= heard  # still unresolved: their reads stay on the primary
                self._blind_pending = self._blind_pending or blind
                self._in_flight = set()
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncpg.InterfaceError("cancelled"))
                    future.exception()  # retrieved here: a waiter may have given up
                if not isinstance(exc, Exception):
                    raise
                continue
            position = _written(position)
            for key in heard:
                self._writes[key] = position
            if blind:
                self._everyone = position
            self._in_flight = set()
            future.set_result(position)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._pending.add(str(payload)[:_LONGEST_KEY])
        if self._settling is None:
            self._settling = asyncio.get_running_loop().call_later(_SETTLE, self._settle)

    def _settle(self) -> None:
        """Give the notices heard since the last sync the primary's position now (the sync's
        failure, if any, is taken by ``_sync_rounds``: their reads stay on the primary)."""
        self._settling = None
        self.sync()

    def _blind(self) -> None:
        """The listening connection came back: notices sent meanwhile are lost."""
        self._blind_pending = True

    # -- the monitor ---------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                await self._sample()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive any failure
                log.warning("read replica check failed: %s", exc)
            await asyncio.sleep(_INTERVAL)

    async def _sample(self) -> None:
        now = time.monotonic()
        try:
            primary = await asyncio.shield(self.sync())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self._set("unavailable", f"the primary's position is unknown ({exc})")
            return
        self._samples.append((now, primary))
        try:
            replayed = await self.pool.fetchval(_REPLICA_POSITION, timeout=self._timeout)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self._set("unavailable", str(exc) or type(exc).__name__)
            return
        if replayed is None:
            self._set("unavailable", "it is not in recovery (promoted?): it is no replica of the primary")
            return
        self._replayed = max(self._replayed, int(replayed))
        while self._samples and self._samples[0][1] <= self._replayed:
            self._samples.popleft()
        self._writes = {key: position for key, position in self._writes.items() if position > self._replayed}
        lag = now - self._samples[0][0] if self._samples else 0.0
        if lag > self._max_lag:
            self._set("lagging", f"{lag:.1f} s behind the primary")
        else:
            self._set("ok", "")

    def _set(self, state: str, why: str) -> None:
        if state != self._state:
            if state == "ok":
                log.info("read replica in use")
            else:
                log.warning("read replica %s: %s; reads go to the primary", state, why)
        self._state = state
