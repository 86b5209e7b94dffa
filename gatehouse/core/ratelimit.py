"""Rate limits counted in PostgreSQL, so every Gatehouse process sees the same counts.

A limit ``N/S`` allows at most N requests per S seconds for one key. Callers compose keys from
a purpose and a subject (``"token:ip:1.2.3.4"``, ``"email:alice@example.com"``) and call
``RateLimiter.hit`` before doing the work; over the limit it raises ``RateLimited`` (429, with
``retry_after``), which the auth renderer turns into GoTrue's ``over_*_rate_limit`` errors and a
``Retry-After`` header.

**Sliding-window approximation.** Counts are kept per fixed window (aligned to multiples of S
seconds since the epoch, so all processes agree on the boundaries). A plain fixed window lets a
client send N requests at the end of one window and N more at the start of the next: 2N in a
moment. Instead the limiter estimates the count over the S seconds ending now as::

    previous_window_hits × (1 − elapsed / S) + current_window_hits

i.e. it assumes the previous window's hits were spread evenly and counts the part of that window
still inside the sliding one (the scheme Cloudflare describes for its rate limiter). The estimate
is never more than N hits off and is exact for a steady rate, at the cost of two rows per key.

**Refused requests count too.** A client that keeps hammering a limit stays over it, instead of
getting a fresh request through each time the estimate dips below N.

**One round trip.** ``hit`` is a single statement: it increments the current window
(``INSERT ... ON CONFLICT DO UPDATE SET hits = hits + 1``, atomic under concurrency: each
request sees its own count) and reads the previous window's count. Use the admin pool, not a
connection inside a long transaction: the counter row stays locked until that transaction ends,
and a rollback would un-count the request.

**Clock.** Windows come from the database's clock (``clock_timestamp()``), the one clock all
processes share; tests pass ``clock=`` to freeze or move time instead of sleeping.

**Keys** are stored as their SHA-256, so an arbitrarily long or odd key (NUL bytes, lone
surrogates, megabytes of "email") costs 32 bytes and cannot break the statement.

**Counting first, refunding later.** ``count`` is ``hit`` without the refusal: it returns what
it saw (a ``Count``), and ``refund`` takes that one hit back. The log-in throttle counts an
attempt before the password is checked and refunds it when the password was right, so only
failures stay counted, and concurrent guesses cannot all slip past a check made before any of
them failed. ``peek`` reads a count without adding to it.

**Slots.** ``claim`` hands out one attempt per ``delay`` seconds for a key
(``auth.login_slowdown``): the claim moves the key's next free moment ahead in one atomic
statement, so processes never give one slot to two requests.

**Cleanup.** Old windows (and slots long past) are deleted by ``prune``: ``hit`` and ``count``
run it themselves at most once every ``prune_every`` seconds per process (one extra statement, on
one request in that many seconds), and ``prune`` can also be called from a periodic task.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import asyncpg

from gatehouse.core.config import Settings
from gatehouse.core.errors import GatehouseError

__all__ = [
    "Count", "Limit", "RateLimited", "RateLimiter", "RateLimits", "key_digest", "retry_after", "sliding_count",
]

log = logging.getLogger("gatehouse.ratelimit")

_LIMIT_RE: Final = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
#: hits stops growing here instead of overflowing PostgreSQL's integer.
_MAX_HITS: Final = 2**31 - 1


class Queryable(Protocol):
    """An asyncpg pool, connection or pooled connection."""

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any: ...

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests per ``seconds`` seconds."""

    count: int
    seconds: int

    def __post_init__(self) -> None:
        if self.count < 0 or self.seconds <= 0:
            raise ValueError(f"a rate limit needs count >= 0 and seconds > 0, not {self.count}/{self.seconds}")

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``"30/300"`` → ``Limit(count=30, seconds=300)``."""
        match = _LIMIT_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"a rate limit looks like N/S (at most N requests per S seconds), not {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}"


@dataclass(frozen=True)
class RateLimits:
    """The configured limits, parsed once (``GATEHOUSE_RATE_LIMIT_*``)."""

    signup: Limit
    token: Limit
    verify: Limit
    email: Limit
    email_address: Limit
    password_attempts: Limit
    password_client: Limit
    password_device: Limit
    render: Limit
    mfa_verify: Limit
    anonymous: Limit

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            signup=Limit.parse(settings.rate_limit_signup),
            token=Limit.parse(settings.rate_limit_token),
            verify=Limit.parse(settings.rate_limit_verify),
            email=Limit.parse(settings.rate_limit_email),
            email_address=Limit.parse(settings.rate_limit_email_address),
            password_attempts=Limit.parse(settings.rate_limit_password_attempts),
            password_client=Limit.parse(settings.rate_limit_password_client),
            password_device=Limit.parse(settings.rate_limit_password_device),
            render=Limit.parse(settings.rate_limit_render),
            mfa_verify=Limit.parse(settings.rate_limit_mfa_verify),
            anonymous=Limit.parse(settings.rate_limit_anonymous),
        )

    @property
    def longest(self) -> int:
        """The longest window in seconds: how long counts must be kept (twice this, see prune)."""
        return max(int(limit.seconds) for limit in vars(self).values())


class RateLimited(GatehouseError):
    """Too many requests for one key; ``retry_after`` says how many seconds to wait."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(code, message, status=429, retry_after=retry_after)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Count:
    """One counted hit on a key: the counts it saw, and the window to refund it from.

    ``stored`` is False when rate limits are off: nothing was written, nothing is ever over.
    """

    key: bytes
    limit: Limit
    previous: int
    current: int
    elapsed: float
    window_start: float
    stored: bool = True

    @property
    def estimate(self) -> float:
        """Hits in the sliding window ending now, this one included."""
        return sliding_count(self.limit, self.previous, self.current, self.elapsed)

    @property
    def over(self) -> bool:
        return self.stored and self.estimate > self.limit.count

    @property
    def alone(self) -> bool:
        """No other hit on the key in this window or the previous one."""
        return self.previous == 0 and self.current <= 1

    @property
    def retry_after(self) -> int:
        return retry_after(self.limit, self.previous, self.current, self.elapsed)


def key_digest(key: str) -> bytes:
    """The stored form of a key: its SHA-256 (32 bytes whatever the input)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def sliding_count(limit: Limit, previous: int, current: int, elapsed: float) -> float:
    """Estimated hits in the ``limit.seconds`` ending now, ``elapsed`` seconds into the window."""
    return previous * max(0.0, 1.0 - elapsed / limit.seconds) + current


def retry_after(limit: Limit, previous: int, current: int, elapsed: float) -> int:
    """Whole seconds until one more request would be allowed, if nobody else hits the key.

    ``current`` includes the refused request. The wait is the earlier of: later in this window,
    once enough of the previous window has slid out; or in the next window, once enough of this
    one has. At least 1, and at most two windows (a zero limit never allows anything).
    """
    n, s = limit.count, limit.seconds
    if n <= 0:
        return s
    waits: list[float] = []
    if current + 1 <= n and previous > 0:  # still this window: previous × (1 − t/S) + current + 1 ≤ N
        moment = s * (1.0 - (n - current - 1) / previous)
        if moment < s:
            waits.append(max(0.0, moment - elapsed))
    # next window: current × (1 − t/S) + 1 ≤ N
    moment = 0.0 if current + 1 <= n else s * (1.0 - (n - 1) / current)
    waits.append(s - elapsed + moment)
    return max(1, math.ceil(min(waits) - 1e-9))


_HIT = """
WITH clock AS (
    SELECT COALESCE($3::float8, extract(epoch FROM clock_timestamp())::float8) AS now
), win AS (
    SELECT now, floor(now / $2::int) * $2::int AS start FROM clock
), bump AS (
    INSERT INTO auth.rate_limits AS r (key, window_start, hits)
    SELECT $1::bytea, to_timestamp(win.start), 1 FROM win
    ON CONFLICT (key, window_start) DO UPDATE SET hits = LEAST(r.hits, $4::int - 1) + 1
    RETURNING r.hits
)
SELECT bump.hits AS current,
       COALESCE((SELECT p.hits FROM auth.rate_limits p
                 WHERE p.key = $1::bytea AND p.window_start = to_timestamp(win.start - $2::int)), 0) AS previous,
       win.now - win.start AS elapsed,
       win.start AS start
FROM bump, win
"""

_PEEK = """
WITH clock AS (
    SELECT COALESCE($3::float8, extract(epoch FROM clock_timestamp())::float8) AS now
), win AS (
    SELECT now, floor(now / $2::int) * $2::int AS start FROM clock
)
SELECT COALESCE((SELECT c.hits FROM auth.rate_limits c
                 WHERE c.key = $1::bytea AND c.window_start = to_timestamp(win.start)), 0) AS current,
       COALESCE((SELECT p.hits FROM auth.rate_limits p
                 WHERE p.key = $1::bytea AND p.window_start = to_timestamp(win.start - $2::int)), 0) AS previous,
       win.now - win.start AS elapsed
FROM win
"""

# The last hit of a window deletes its row (hits must stay positive); otherwise one less. Two
# refunds racing on a row of 2 may leave it at 1: a count a little high, never too low.
_REFUND = """
WITH gone AS (
    DELETE FROM auth.rate_limits WHERE key = $1::bytea AND window_start = to_timestamp($2::float8) AND hits = 1
)
UPDATE auth.rate_limits SET hits = hits - 1
WHERE key = $1::bytea AND window_start = to_timestamp($2::float8) AND hits > 1
"""

# Claim the key's slot if it is free (not_before has passed), moving it ``delay`` seconds ahead;
# otherwise say how long until it frees. The conflicting row is locked by ON CONFLICT, so of
# two concurrent claims exactly one wins.
_CLAIM = """
WITH clock AS (
    SELECT COALESCE($3::float8, extract(epoch FROM clock_timestamp())::float8) AS now
), claim AS (
    INSERT INTO auth.login_slowdown AS s (key, not_before)
    SELECT $1::bytea, to_timestamp(clock.now + $2::float8) FROM clock
    ON CONFLICT (key) DO UPDATE SET not_before = excluded.not_before
        WHERE s.not_before <= excluded.not_before - make_interval(secs => $2::float8)
    RETURNING s.not_before
)
SELECT EXISTS (SELECT 1 FROM claim) AS claimed,
       (SELECT extract(epoch FROM s.not_before)::float8 - clock.now
        FROM auth.login_slowdown s WHERE s.key = $1::bytea) AS wait
FROM clock
"""

# SKIP LOCKED: processes pruning at the same moment share the work instead of waiting on (or
# deadlocking with) each other; a row skipped now goes next time.
_PRUNE = """
DELETE FROM auth.rate_limits WHERE (key, window_start) IN (
    SELECT key, window_start FROM auth.rate_limits
    WHERE window_start < to_timestamp(COALESCE($2::float8, extract(epoch FROM clock_timestamp())::float8) - $1::int)
    FOR UPDATE SKIP LOCKED
)
"""

# A slot whose moment has passed is the same as no row at all.
_PRUNE_SLOTS = """
DELETE FROM auth.login_slowdown WHERE key IN (
    SELECT key FROM auth.login_slowdown
    WHERE not_before < to_timestamp(COALESCE($1::float8, extract(epoch FROM clock_timestamp())::float8))
    FOR UPDATE SKIP LOCKED
)
"""


class RateLimiter:
    """Counts hits per key in ``auth.rate_limits`` and refuses those over a limit.

    ``clock`` (seconds since the epoch) replaces the database's clock, for tests. ``prune_every``
    is how often, in seconds, ``hit`` deletes expired windows itself (None: never; then call
    ``prune`` periodically).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] | None = None,
        prune_every: float | None = 60.0,
    ) -> None:
        self.enabled = settings.rate_limits_enabled
        self.limits = RateLimits.from_settings(settings)
        self._clock = clock
        self._prune_every = prune_every
        self._longest = self.limits.longest
        self._next_prune = 0.0

    def _now(self) -> float | None:
        return self._clock() if self._clock is not None else None

    async def hit(
        self,
        db: Queryable,
        key: str,
        limit: Limit,
        *,
        code: str = "over_request_rate_limit",
        message: str = "Request rate limit reached",
    ) -> None:
        """Count one request for ``key``; raise ``RateLimited(code, message)`` if over ``limit``."""
        counted = await self.count(db, key, limit)
        if counted.over:
            raise RateLimited(code, message, counted.retry_after)

    async def count(self, db: Queryable, key: str, limit: Limit) -> Count:
        """Count one hit for ``key`` and return what was seen; never refuses (see ``Count.over``)."""
        digest = key_digest(key)
        if not self.enabled:
            return Count(digest, limit, 0, 1, 0.0, 0.0, stored=False)
        self._longest = max(self._longest, limit.seconds)
        row = await db.fetchrow(_HIT, digest, limit.seconds, self._now(), _MAX_HITS)
        await self._maybe_prune(db)
        return Count(digest, limit, row["previous"], row["current"], row["elapsed"], row["start"])

    async def refund(self, db: Queryable, counted: Count) -> None:
        """Take back one hit that ``count`` made (the attempt turned out not to matter)."""
        if counted.stored:
            await db.execute(_REFUND, counted.key, counted.window_start)

    async def peek(self, db: Queryable, key: str, limit: Limit) -> float:
        """The sliding-window estimate of hits on ``key`` now, without adding one (0 when off)."""
        if not self.enabled:
            return 0.0
        self._longest = max(self._longest, limit.seconds)
        row = await db.fetchrow(_PEEK, key_digest(key), limit.seconds, self._now())
        return sliding_count(limit, row["previous"], row["current"], row["elapsed"])

    async def claim(self, db: Queryable, key: str, delay: float) -> int:
        """Take ``key``'s slot and hold it for ``delay`` seconds: 0 if taken, else whole seconds to wait."""
        if not self.enabled:
            return 0
        row = await db.fetchrow(_CLAIM, key_digest(key), float(delay), self._now())
        if row["claimed"]:
            return 0
        wait = row["wait"] if row["wait"] is not None else delay
        return max(1, math.ceil(wait - 1e-9))

    async def reset(self, db: Queryable, key: str) -> None:
        """Forget every count for ``key`` (an operator unblocking someone, or a test)."""
        await db.execute("DELETE FROM auth.rate_limits WHERE key = $1::bytea", key_digest(key))

    async def prune(self, db: Queryable) -> int:
        """Delete windows no limit can still need; return how many rows went.

        A window is needed while it is the current or the previous one of some limit, so rows
        older than twice the longest limit in use (configured, or passed to ``hit``) can go.
        """
        status = await db.execute(_PRUNE, 2 * self._longest, self._now())
        slots = await db.execute(_PRUNE_SLOTS, self._now())
        return int(status.rsplit(" ", 1)[-1]) + int(slots.rsplit(" ", 1)[-1])

    async def _maybe_prune(self, db: Queryable) -> None:
        if self._prune_every is None:
            return
        in_transaction = getattr(db, "is_in_transaction", None)
        if in_transaction is not None and in_transaction():
            # Not inside a caller's transaction: the deleted rows would stay locked until it
            # ends, and a failure would abort it. The next hit through the pool will prune.
            return
        now = self._clock() if self._clock is not None else time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self._prune_every
        try:
            await self.prune(db)
        except (asyncpg.PostgresError, OSError):
            # Cleanup is housekeeping: the request it rode on must not fail because of it.
            log.warning("pruning auth.rate_limits failed", exc_info=True)
