"""Rate limits counted in PostgreSQL: shared, atomic, sliding, cleaned up. A frozen clock, no sleeping."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from gatehouse.core.config import load_settings
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.core.ratelimit import (
    Limit,
    RateLimited,
    RateLimiter,
    RateLimits,
    key_digest,
    retry_after,
    sliding_count,
)

#: A multiple of every window used here (60, 300, 3600 s), so T0 starts a window of each.
T0 = 1_800_000_000.0
assert T0 % 3600 == 0


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock | None = None, *, prune_every: float | None = None, **overrides: Any) -> RateLimiter:
    return RateLimiter(load_settings(**overrides), clock=clock or Clock(), prune_every=prune_every)


def new_key(purpose: str = "token:ip") -> str:
    return f"{purpose}:{uuid.uuid4()}"


async def hits_allowed(rl: RateLimiter, db: Any, key: str, limit: Limit, tries: int) -> int:
    allowed = 0
    for _ in range(tries):
        try:
            await rl.hit(db, key, limit)
            allowed += 1
        except RateLimited:
            pass
    return allowed


async def stored_rows(db: Database, key: str) -> list[tuple[float, int]]:
    rows = await db.admin.fetch(
        "SELECT extract(epoch FROM window_start)::float8 AS start, hits FROM auth.rate_limits "
        "WHERE key = $1 ORDER BY window_start",
        key_digest(key),
    )
    return [(row["start"], row["hits"]) for row in rows]


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"), [("30/300", Limit(30, 300)), (" 1 / 60 ", Limit(1, 60)), ("0/5", Limit(0, 5))]
)
def test_limit_parse(text: str, limit: Limit) -> None:
    assert Limit.parse(text) == limit
    assert Limit.parse(str(limit)) == limit


@pytest.mark.parametrize("text", ["", "30", "30/", "/300", "a/b", "30/0", "-1/60", "1.5/60", "30/300/1"])
def test_limit_parse_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        Limit.parse(text)


def test_configured_limits_are_parsed_once() -> None:
    limits = RateLimits.from_settings(load_settings(rate_limit_token="5/10", rate_limit_email_address="1/3600"))
    assert limits.token == Limit(5, 10)
    assert limits.signup == Limit(30, 300)
    assert limits.longest == 3600


# -- the sliding estimate and the wait (pure) -----------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "current", "elapsed", "estimate"),
    [
        (0, 5, 0, 5),
        (10, 0, 0, 10),  # at the boundary the whole previous window still counts
        (10, 2, 30, 7),  # half of it has slid out
        (10, 2, 60, 2),
    ],
)
def test_sliding_count(previous: int, current: int, elapsed: float, estimate: float) -> None:
    assert sliding_count(Limit(10, 60), previous, current, elapsed) == pytest.approx(estimate)


@pytest.mark.parametrize(
    ("limit", "previous", "current", "elapsed", "wait"),
    [
        (Limit(3, 60), 0, 4, 10, 80),  # next window, once 4 × (1 − t/60) + 1 ≤ 3: t = 30
        (Limit(3, 60), 0, 4, 59.5, 31),
        (Limit(1, 60), 0, 2, 0, 120),  # 2 × (1 − t/60) + 1 ≤ 1 only at t = 60: two windows
        (Limit(10, 60), 12, 2, 0, 25),  # this window: 12 × (1 − t/60) + 3 ≤ 10 at t = 25
        (Limit(10, 60), 12, 2, 24.5, 1),
        (Limit(0, 60), 0, 1, 5, 60),  # nothing is ever allowed
    ],
)
def test_retry_after(limit: Limit, previous: int, current: int, elapsed: float, wait: int) -> None:
    assert retry_after(limit, previous, current, elapsed) == wait


# -- counting in the database ---------------------------------------------------------------------


async def test_n_hits_pass_and_the_next_is_refused(db: Database) -> None:
    clock = Clock(T0 + 10)
    rl, key, limit = limiter(clock), new_key(), Limit(3, 60)
    for _ in range(3):
        await rl.hit(db.admin, key, limit)
    with pytest.raises(RateLimited) as caught:
        await rl.hit(db.admin, key, limit, code="over_email_send_rate_limit", message="Email rate limit exceeded")
    error = caught.value
    assert isinstance(error, GatehouseError)
    assert (error.code, error.message, error.status) == ("over_email_send_rate_limit", "Email rate limit exceeded", 429)
    assert error.retry_after == 80
    assert error.extra == {"retry_after": 80}
    assert await stored_rows(db, key) == [(T0, 4)]  # refused requests count too


async def test_default_code_is_gotrue_request_rate_limit(db: Database) -> None:
    rl, key = limiter(), new_key()
    await rl.hit(db.admin, key, Limit(1, 60))
    with pytest.raises(RateLimited) as caught:
        await rl.hit(db.admin, key, Limit(1, 60))
    assert (caught.value.code, caught.value.message) == ("over_request_rate_limit", "Request rate limit reached")


async def test_keys_are_counted_separately(db: Database) -> None:
    rl, limit = limiter(), Limit(2, 60)
    first, second = new_key("email"), new_key("email")
    assert await hits_allowed(rl, db.admin, first, limit, 5) == 2
    assert await hits_allowed(rl, db.admin, second, limit, 5) == 2


async def test_a_connection_works_as_well_as_the_pool(db: Database) -> None:
    rl, key = limiter(), new_key()
    async with db.admin.acquire() as conn:
        assert await hits_allowed(rl, conn, key, Limit(2, 60), 3) == 2


@pytest.mark.parametrize("limit", [Limit(1, 60), Limit(10, 300), Limit(25, 3600)])
async def test_concurrent_processes_never_let_more_than_n_through(
    db: Database, database_url: str, limit: Limit
) -> None:
    """Two pools (as two server processes would have), 60 simultaneous hits: exactly N pass."""
    other = await asyncpg.create_pool(database_url, min_size=4, max_size=4)
    try:
        process_a, process_b = limiter(Clock(T0 + 1)), limiter(Clock(T0 + 1))
        key = new_key()

        async def one(rl: RateLimiter, pool: Any) -> bool:
            try:
                await rl.hit(pool, key, limit)
                return True
            except RateLimited:
                return False

        results = await asyncio.gather(
            *(one(process_a, db.admin) if i % 2 else one(process_b, other) for i in range(60))
        )
    finally:
        await other.close()
    assert sum(results) == limit.count
    assert await stored_rows(db, key) == [(T0, 60)]


async def test_disabled_limiter_never_refuses_and_writes_nothing(db: Database) -> None:
    rl, key = limiter(rate_limits_enabled=False), new_key()
    assert await hits_allowed(rl, db.admin, key, Limit(1, 60), 20) == 20
    assert await stored_rows(db, key) == []


# -- windows --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("later", "allowed"),
    [
        # 5 hits (4 allowed + 1 refused) at T0 + 59 under 4/60. In the next window one more hit
        # is allowed once 5 × (1 − t/60) + 1 ≤ 4, that is t ≥ 24: no 2N burst at the boundary.
        (60, False),
        (60 + 23, False),
        (60 + 24, True),
        (60 + 59, True),
        (120, True),  # two windows on, everything is forgotten
        (10_000, True),
    ],
)
async def test_the_window_slides(db: Database, later: float, allowed: bool) -> None:
    clock = Clock(T0 + 59)
    rl, key, limit = limiter(clock), new_key(), Limit(4, 60)
    assert await hits_allowed(rl, db.admin, key, limit, 5) == 4
    clock.now = T0 + later
    assert await hits_allowed(rl, db.admin, key, limit, 1) == (1 if allowed else 0)


@pytest.mark.parametrize(
    ("limit", "start", "hits"), [(Limit(3, 60), 10, 4), (Limit(3, 60), 59, 9), (Limit(5, 300), 200, 6)]
)
async def test_retry_after_is_honest(db: Database, limit: Limit, start: float, hits: int) -> None:
    """Waiting retry_after seconds is enough, and one second less is not."""
    clock = Clock()
    rl = limiter(clock)
    for probe, expect in ((-1, False), (0, True)):
        key = new_key()
        clock.now = T0 + start
        refusals: list[RateLimited] = []
        for _ in range(hits):
            try:
                await rl.hit(db.admin, key, limit)
            except RateLimited as refused:
                refusals.append(refused)
        clock.now += refusals[-1].retry_after + probe
        assert await hits_allowed(rl, db.admin, key, limit, 1) == (1 if expect else 0)


# -- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "",
        "email:" + "a" * 1_000_000 + "@example.com",
        "email:nul\x00byte@example.com",
        "email:lone\ud800surrogate",
        "email:ünïcødé🔑@example.com",
        "email:'); DROP TABLE auth.rate_limits; --",
    ],
)
async def test_hostile_keys_are_stored_as_32_bytes(db: Database, key: str) -> None:
    rl = limiter()
    assert await hits_allowed(rl, db.admin, key, Limit(1, 60), 2) == 1
    size = await db.admin.fetchval("SELECT octet_length(key) FROM auth.rate_limits WHERE key = $1", key_digest(key))
    assert size == 32


async def test_near_identical_keys_do_not_share_a_count(db: Database) -> None:
    rl, base = limiter(), new_key("email")
    for key in (base, base + "\x00", base.upper(), base + " "):
        assert await hits_allowed(rl, db.admin, key, Limit(1, 60), 2) == 1


async def test_reset_forgets_a_key(db: Database) -> None:
    rl, key, limit = limiter(), new_key(), Limit(1, 60)
    assert await hits_allowed(rl, db.admin, key, limit, 2) == 1
    await rl.reset(db.admin, key)
    assert await hits_allowed(rl, db.admin, key, limit, 1) == 1


# -- cleanup --------------------------------------------------------------------------------------


async def test_prune_deletes_windows_no_limit_needs(db: Database) -> None:
    clock = Clock(T0 - 30 * 86400)
    rl = limiter(clock)  # longest configured limit: 300 s, so windows older than 600 s go
    old, recent, current = new_key(), new_key(), new_key()
    await rl.hit(db.admin, old, Limit(5, 60))
    clock.now = T0 - 600  # the previous window of a 300 s limit seen at T0 - 1 s
    await rl.hit(db.admin, recent, Limit(5, 300))
    clock.now = T0
    await rl.hit(db.admin, current, Limit(5, 60))

    assert await rl.prune(db.admin) >= 1
    assert await stored_rows(db, old) == []
    assert await stored_rows(db, recent) == [(T0 - 600, 1)]
    assert await stored_rows(db, current) == [(T0, 1)]
    assert await rl.prune(db.admin) == 0


async def test_prune_keeps_what_a_longer_limit_passed_to_hit_needs(db: Database) -> None:
    clock = Clock(T0 - 3600)
    rl, key = limiter(clock), new_key()
    await rl.hit(db.admin, key, Limit(5, 3600))
    clock.now = T0 + 10  # the window at T0 - 3600 is this 1-hour limit's previous window
    await rl.prune(db.admin)
    assert await stored_rows(db, key) == [(T0 - 3600, 1)]


async def test_hit_prunes_by_itself_now_and_then(db: Database) -> None:
    clock = Clock(T0 - 86400)
    writer = limiter(clock)
    stale = new_key()
    await writer.hit(db.admin, stale, Limit(5, 60))

    clock.now = T0
    rl = limiter(clock, prune_every=60)
    await rl.hit(db.admin, new_key(), Limit(5, 60))  # a process's first hit prunes
    assert await stored_rows(db, stale) == []

    clock.now = T0 - 86400
    await writer.hit(db.admin, stale, Limit(5, 60))  # stale again, but the next prune is due at T0 + 60
    clock.now = T0 + 59
    await rl.hit(db.admin, new_key(), Limit(5, 60))
    assert len(await stored_rows(db, stale)) == 1
    clock.now = T0 + 60
    await rl.hit(db.admin, new_key(), Limit(5, 60))
    assert await stored_rows(db, stale) == []


async def test_hit_does_not_prune_inside_a_callers_transaction(db: Database) -> None:
    clock = Clock(T0 - 86400)
    stale = new_key()
    await limiter(clock).hit(db.admin, stale, Limit(5, 60))
    clock.now = T0
    rl = limiter(clock, prune_every=60)
    async with db.admin.acquire() as conn, conn.transaction():
        await rl.hit(conn, new_key(), Limit(5, 60))
    assert len(await stored_rows(db, stale)) == 1
    await rl.hit(db.admin, new_key(), Limit(5, 60))
    assert await stored_rows(db, stale) == []


# -- count first, refund later; peek; slots -------------------------------------------------------


async def test_count_reports_without_refusing_and_refund_takes_one_back(db: Database) -> None:
    rl, key, limit = limiter(Clock(T0 + 5)), new_key(), Limit(2, 60)
    seen = [await rl.count(db.admin, key, limit) for _ in range(3)]
    assert [c.current for c in seen] == [1, 2, 3]
    assert [c.over for c in seen] == [False, False, True]
    assert [c.alone for c in seen] == [True, False, False]
    assert seen[2].retry_after > 0
    await rl.refund(db.admin, seen[2])
    await rl.refund(db.admin, seen[1])
    assert await stored_rows(db, key) == [(T0, 1)]
    assert await rl.peek(db.admin, key, limit) == 1
    await rl.refund(db.admin, seen[0])  # the last hit of a window deletes the row
    assert await stored_rows(db, key) == []
    assert await rl.peek(db.admin, key, limit) == 0


async def test_a_refund_goes_back_to_the_window_it_was_counted_in(db: Database) -> None:
    clock = Clock(T0 + 59)
    rl, key, limit = limiter(clock), new_key(), Limit(5, 60)
    first = await rl.count(db.admin, key, limit)
    clock.now = T0 + 61
    await rl.count(db.admin, key, limit)
    await rl.refund(db.admin, first)
    assert await stored_rows(db, key) == [(T0 + 60, 1)]


async def test_peek_reads_the_sliding_estimate_without_counting(db: Database) -> None:
    clock = Clock(T0 + 1)
    rl, key, limit = limiter(clock), new_key(), Limit(10, 60)
    for _ in range(4):
        await rl.count(db.admin, key, limit)
    clock.now = T0 + 90  # half of the previous window has slid out
    assert await rl.peek(db.admin, key, limit) == pytest.approx(2)
    assert await stored_rows(db, key) == [(T0, 4)]


async def test_a_slot_goes_to_one_claim_per_delay(db: Database) -> None:
    clock = Clock(T0)
    rl, key = limiter(clock), new_key("slowdown")
    assert await rl.claim(db.admin, key, 8) == 0
    assert await rl.claim(db.admin, key, 8) == 8
    clock.now = T0 + 5.5
    assert await rl.claim(db.admin, key, 8) == 3
    clock.now = T0 + 8
    assert await rl.claim(db.admin, key, 16) == 0
    clock.now = T0 + 9
    assert await rl.claim(db.admin, key, 16) == 15


async def test_concurrent_claims_from_two_processes_hand_out_one_slot(db: Database, database_url: str) -> None:
    other = await asyncpg.create_pool(database_url, min_size=4, max_size=4)
    try:
        a, b = limiter(Clock(T0)), limiter(Clock(T0))
        key = new_key("slowdown")
        waits = await asyncio.gather(
            *((a.claim(db.admin, key, 30) if i % 2 else b.claim(other, key, 30)) for i in range(40))
        )
    finally:
        await other.close()
    assert waits.count(0) == 1
    assert all(1 <= wait <= 30 for wait in waits if wait)


async def test_prune_deletes_slots_whose_moment_has_passed(db: Database) -> None:
    clock = Clock(T0)
    rl, gone, kept = limiter(clock), new_key("slowdown"), new_key("slowdown")
    await rl.claim(db.admin, gone, 5)
    await rl.claim(db.admin, kept, 60)
    clock.now = T0 + 10
    await rl.prune(db.admin)
    rows = await db.admin.fetch(
        "SELECT key FROM auth.login_slowdown WHERE key = ANY($1)", [key_digest(gone), key_digest(kept)]
    )
    assert [row["key"] for row in rows] == [key_digest(kept)]


async def test_disabled_limiter_counts_and_claims_nothing(db: Database) -> None:
    rl, key = limiter(rate_limits_enabled=False), new_key()
    counted = await rl.count(db.admin, key, Limit(0, 60))
    assert not counted.over and counted.alone
    await rl.refund(db.admin, counted)
    assert await rl.claim(db.admin, key, 30) == 0 and await rl.claim(db.admin, key, 30) == 0
    assert await stored_rows(db, key) == []
