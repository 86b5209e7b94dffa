"""Request figures kept in PostgreSQL, so that any process can chart the whole deployment.

Prometheus' counters (``core/metrics.py``) live in each process's memory and exist only while
``GATEHOUSE_METRICS`` is on. The dashboard's Health page needs the last hour of every process,
whatever that setting says, so each process also keeps a ``Tally``: a few integers the
request-context middleware bumps per request (no I/O, no lock: one event loop per process).
Every ``GATEHOUSE_METRICS_SAMPLE_INTERVAL`` seconds its ``Sampler`` takes the tally's counts since
the previous sample and writes them, with the pools' use at that moment, as one row of
``gatehouse.metrics_samples``; rows older than the retention go at the same time.

Latencies are stored as histogram bucket counts, never as quantiles: quantiles of several
processes or minutes cannot be combined, bucket counts can be summed, and ``quantile`` then reads
the p50 or p99 of all the requests they counted, as Prometheus' ``histogram_quantile`` does.

Core knows no service: this module counts requests and reads pools, nothing else.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

import asyncpg
from starlette.types import Scope

from gatehouse.core.background import Background
from gatehouse.core.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from gatehouse.core.db import Database

log = logging.getLogger("gatehouse.samples")

#: What a lost or refusing database raises; the sampler logs these and keeps its counts for the next try.
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

_WRITE = """
WITH pruned AS (
    DELETE FROM gatehouse.metrics_samples WHERE sampled_at < now() - make_interval(secs => $10)
)
INSERT INTO gatehouse.metrics_samples
    (source, seconds, requests, errors, latency_counts, latency_sum, pool_in_use, pool_open, pool_max)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

_WINDOW = """
SELECT now() AS now, s.sampled_at, s.source, s.seconds, s.requests, s.errors, s.latency_counts, s.pool_in_use,
    s.pool_max
FROM (SELECT 1) AS one
LEFT JOIN gatehouse.metrics_samples AS s ON s.sampled_at > now() - make_interval(secs => $1)
ORDER BY s.sampled_at
"""


@dataclass
class Counts:
    """Requests counted over some time: how many, how many failed (5xx), their latency buckets."""

    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency_sum += other.latency_sum
        for index, count in enumerate(other.buckets):
            self.buckets[index] += count


class Tally:
    """This process's counts since the last sample. ``observe`` is the middleware's hook."""

    def __init__(self) -> None:
        self._counts = Counts()

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        counts = self._counts
        counts.requests += 1
        if status >= 500:
            counts.errors += 1
        # bisect_left: a latency equal to a bound belongs to that bound's bucket (Prometheus' "le").
        counts.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts.latency_sum += seconds

    def take(self) -> Counts:
        """The counts so far; the tally starts again from zero."""
        taken, self._counts = self._counts, Counts()
        return taken

    def give_back(self, counts: Counts) -> None:
        """Counts that could not be written: they join the next sample."""
        self._counts.add(counts)


def quantile(buckets: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BUCKETS) -> float | None:
    """The ``q`` quantile (0..1) in seconds of the latencies counted in ``buckets``, None if none were.

    Linear within the bucket the rank falls in, the first bucket starting at 0; a rank in the
    last bucket (above the highest bound) answers the highest bound, as ``histogram_quantile`` does.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(buckets):
        if below + count >= rank and count > 0:
            if index >= len(bounds):
                return float(bounds[-1])
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * (rank - below) / count
        below += count
    return float(bounds[-1])


class Sampler(Background):
    """Writes this process's tally as one row every ``interval`` seconds, and prunes old rows."""

    task_name = "gatehouse-metrics-sampler"

    def __init__(self, database: Database, tally: Tally, *, interval: float, retention: float, max_per_pool: int) -> None:
        self._database = database
        self._tally = tally
        self._interval = interval
        self._retention = retention
        self._max_per_pool = max_per_pool
        self._last = time.monotonic()
        self.source = f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(3)}"

    async def start(self) -> None:
        # The process that runs the loop names the rows (a worker forked from a parent has its own pid).
        self.source = f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._last = time.monotonic()
        await super().start()

    async def stop(self) -> None:
        """End the loop, then write what was counted since the last sample (the pool is still open)."""
        await super().stop()
        try:
            await asyncio.wait_for(self.sample(), 5)
        except Exception as exc:  # noqa: BLE001 - shutting down: say so, never fail the shutdown
            log.warning("the last metrics sample was not written: %s", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sample()
            except _DB_ERRORS as exc:
                log.warning("metrics sample not written, its counts join the next one: %s", exc)

    async def sample(self) -> None:
        """Write the counts since the previous sample and the pools' use now, as one row."""
        now = time.monotonic()
        counts = self._tally.take()
        pools = self._database.pool_figures()
        try:
            await self._database.admin.execute(
                _WRITE, self.source, max(now - self._last, 1e-3), counts.requests, counts.errors, counts.buckets,
                counts.latency_sum, sum(pool.in_use for pool in pools.values()),
                sum(pool.size for pool in pools.values()), self._max_per_pool * len(pools), float(self._retention),
            )
        except BaseException:
            self._tally.give_back(counts)
            raise
        self._last = now


@dataclass(frozen=True)
class Slot:
    """The figures of one step of a window, over every process that wrote a sample in it."""

    start: datetime
    requests_per_second: float | None
    error_rate: float | None
    p50: float | None
    p99: float | None
    pool_in_use: float | None
    pool_max: float | None


@dataclass(frozen=True)
class Window:
    """The last ``seconds`` in steps of ``step`` seconds (oldest first), and the whole of it as one."""

    now: datetime
    step: int
    slots: list[Slot]
    total: Slot
    sources: int


@dataclass
class _Sum:
    counts: Counts = field(default_factory=Counts)
    #: The span the rows cover: each row covers ``seconds`` before its ``sampled_at``.
    since: float = float("inf")
    until: float = float("-inf")
    #: By source: (pool in use summed, pool max summed, samples), for the mean of each process.
    pools: dict[str, list[float]] = field(default_factory=dict)

    def add(self, row: Any) -> None:
        self.counts.add(Counts(row["requests"], row["errors"], list(row["latency_counts"]), 0.0))
        self.since = min(self.since, row["sampled_at"].timestamp() - row["seconds"])
        self.until = max(self.until, row["sampled_at"].timestamp())
        mine = self.pools.setdefault(row["source"], [0.0, 0.0, 0.0])
        mine[0] += row["pool_in_use"]
        mine[1] += row["pool_max"]
        mine[2] += 1

    def slot(self, start: float, zone: tzinfo | None) -> Slot:
        begins = datetime.fromtimestamp(start, zone)
        if not self.pools:
            return Slot(begins, None, None, None, None, None, None)
        # All processes' requests over the span their rows cover together: processes running side
        # by side add up, one restarted (a new source) does not count twice, and the step still
        # under way is divided by the time sampled so far, not by the whole step.
        covered = self.until - self.since
        requests = self.counts.requests
        return Slot(
            begins, requests / covered if covered > 0 else None, self.counts.errors / requests if requests else None,
            quantile(self.counts.buckets, 0.5), quantile(self.counts.buckets, 0.99),
            sum(mine[0] / mine[2] for mine in self.pools.values()),
            sum(mine[1] / mine[2] for mine in self.pools.values()),
        )


def summarise(rows: Sequence[Any], *, now: datetime, seconds: int, step: int) -> Window:
    """Group sample rows (mappings with the columns of ``metrics_samples``) into whole steps (whole
    minutes for a step of 60 s), the last one the step ``now`` falls in."""
    count = max(1, -(-seconds // step))
    start = math.ceil(now.timestamp() / step) * step - count * step
    sums = [_Sum() for _ in range(count)]
    whole = _Sum()
    sources: set[str] = set()
    for row in rows:
        if row["sampled_at"] is None or len(row["latency_counts"]) != len(LATENCY_BUCKETS) + 1:
            continue  # the empty window's one row, or a row written with other buckets
        index = int((row["sampled_at"].timestamp() - start) // step)
        if 0 <= index < count:
            sums[index].add(row)
            whole.add(row)
            sources.add(row["source"])
    zone = now.tzinfo
    slots = [total.slot(start + index * step, zone) for index, total in enumerate(sums)]
    overall = whole.slot(start, zone)
    # Pool use over the whole window: the mean of the steps that have one, not a sum of processes
    # over the hour (a restarted process is another source).
    used = [slot for slot in slots if slot.pool_in_use is not None]
    if used:
        overall = Slot(overall.start, overall.requests_per_second, overall.error_rate, overall.p50, overall.p99,
                       sum(slot.pool_in_use or 0.0 for slot in used) / len(used),
                       sum(slot.pool_max or 0.0 for slot in used) / len(used))
    return Window(now, step, slots, overall, len(sources))


async def read_window(pool: asyncpg.Pool, *, seconds: int = 3600, step: int = 60) -> Window:
    """The last ``seconds`` of every process's samples, in steps of ``step`` seconds."""
    rows = await pool.fetch(_WINDOW, float(seconds))
    return summarise(rows, now=rows[0]["now"], seconds=seconds, step=step)


async def database_size(pool: asyncpg.Pool) -> int:
    """Bytes the current database takes on disk."""
    size: int = await pool.fetchval("SELECT pg_database_size(current_database())")
    return size
