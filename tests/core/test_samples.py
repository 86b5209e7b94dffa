"""The request samples behind the dashboard's Health page: each process counts its requests in a
Tally and writes them to PostgreSQL; any process reads the sum of all of them, p50/p99 from the
summed latency buckets; rows past the retention are pruned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.keys import KeySet
from gatehouse.core.metrics import LATENCY_BUCKETS
from gatehouse.core.samples import Sampler, Tally, quantile, read_window, summarise

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "root_path": ""}
EMPTY = [0] * (len(LATENCY_BUCKETS) + 1)


def buckets(**counts: int) -> list[int]:
    """Bucket counts by index: ``buckets(b0=50, b4=50)``."""
    found = list(EMPTY)
    for name, count in counts.items():
        found[int(name[1:])] = count
    return found


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        (buckets(b3=100), 0.5, 0.0075),  # all in (5 ms, 10 ms]: half way through it
        (buckets(b0=50, b4=50), 0.5, 0.001),  # the rank ends exactly at the first bucket's top
        (buckets(b0=50, b4=50), 0.99, 0.01 + 0.015 * 49 / 50),
        (buckets(b0=1, b13=99), 0.99, 10.0),  # above the highest bound: the highest bound
        (buckets(b12=1), 0.5, 5.0 + 5.0 * 0.5),
        (EMPTY, 0.5, None),
    ],
)
def test_quantiles_from_bucket_counts(counts: list[int], q: float, expected: float | None) -> None:
    found = quantile(counts, q)
    assert found == pytest.approx(expected) if expected is not None else found is None


def test_the_tally_counts_by_bucket_and_status_and_starts_again_when_taken() -> None:
    tally = Tally()
    for status, seconds in [(200, 0.001), (200, 0.0011), (404, 0.3), (500, 11.0), (503, 0.0)]:
        tally.observe(SCOPE, status, seconds)
    counts = tally.take()
    assert (counts.requests, counts.errors) == (5, 2)  # 5xx only
    assert counts.buckets == buckets(b0=2, b1=1, b8=1, b13=1)  # a latency on a bound is in that bound's bucket
    assert tally.take().requests == 0
    tally.give_back(counts)
    assert tally.take().buckets == counts.buckets


def row(at: datetime, source: str, requests: int, errors: int, counts: list[int], in_use: int = 1,
        seconds: float = 60.0) -> dict[str, Any]:
    return {"sampled_at": at, "source": source, "seconds": seconds, "requests": requests, "errors": errors,
            "latency_counts": counts, "pool_in_use": in_use, "pool_max": 20}


def test_a_window_sums_every_process_per_step() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    rows = [
        row(now - timedelta(seconds=90), "a", 600, 6, buckets(b3=600), in_use=2),  # step 12:58-12:59
        row(now - timedelta(seconds=90), "b", 600, 0, buckets(b5=600), in_use=4),  # side by side with a
        row(now - timedelta(seconds=20), "a", 60, 0, buckets(b0=60), seconds=30),  # the last step, 30 s of it
        # a process restarted half way through 11:30 (a new source): 10/s, not twice that
        row(now - timedelta(minutes=30) + timedelta(seconds=29), "before", 290, 0, buckets(b0=290), seconds=29),
        row(now - timedelta(minutes=30) + timedelta(seconds=59), "after", 300, 0, buckets(b0=300), seconds=30),
        row(now - timedelta(hours=2), "old", 10, 10, buckets(b0=10)),  # outside the window: ignored
        row(now - timedelta(seconds=30), "other-buckets", 5, 5, [5]),  # another bucket layout: ignored
    ]
    window = summarise(rows, now=now, seconds=3600, step=60)
    assert len(window.slots) == 60 and window.sources == 4
    assert window.slots[30].requests_per_second == pytest.approx(590 / 59)
    previous, last = window.slots[-2], window.slots[-1]
    assert previous.start == now - timedelta(minutes=2)
    assert previous.requests_per_second == pytest.approx(1200 / 60)  # two processes at 10/s each
    assert previous.error_rate == pytest.approx(6 / 1200)
    assert previous.p50 == pytest.approx(0.01)  # half in (5, 10] ms, half in (25, 50] ms: the 600th is at 10 ms
    assert previous.p99 == pytest.approx(0.025 + 0.025 * (1188 - 600) / 600)
    assert previous.pool_in_use == pytest.approx(6) and previous.pool_max == pytest.approx(40)
    assert last.requests_per_second == pytest.approx(60 / 30)  # over the 30 s sampled so far
    assert window.slots[0].requests_per_second is None and window.slots[0].p50 is None
    total = 1260 + 590
    assert window.total.requests_per_second == pytest.approx(total / (30 * 60 - 20))  # 30 min to 20 s ago
    assert window.total.error_rate == pytest.approx(6 / total)


@pytest.fixture
async def two_apps(database_url: str, keys: KeySet, settings: Settings) -> AsyncIterator[list[Database]]:
    """Two databases objects with their own pools, as two Gatehouse processes have."""
    apps = [Database(database_url, keys, settings), Database(database_url, keys, settings)]
    for app in apps:
        await app.open()
    yield apps
    for app in apps:
        await app.close()


async def test_two_processes_write_samples_that_any_of_them_reads_as_one(two_apps: list[Database]) -> None:
    first, second = two_apps
    await first.admin.execute("DELETE FROM gatehouse.metrics_samples")
    tallies = [Tally(), Tally()]
    samplers = [Sampler(app, tally, interval=3600, retention=3600, max_per_pool=7)
                for app, tally in zip(two_apps, tallies, strict=True)]
    for _ in range(30):
        tallies[0].observe(SCOPE, 200, 0.004)
    for _ in range(10):
        tallies[1].observe(SCOPE, 502, 0.2)
    await samplers[0].sample()
    await samplers[1].sample()
    await samplers[1].sample()  # nothing new: a row all the same, with the pool's use
    rows = await first.admin.fetch("SELECT * FROM gatehouse.metrics_samples ORDER BY id")
    assert [(r["source"], r["requests"], r["errors"]) for r in rows] == [
        (samplers[0].source, 30, 0), (samplers[1].source, 10, 10), (samplers[1].source, 0, 0)]
    assert rows[0]["latency_counts"] == buckets(b2=30) and rows[1]["latency_counts"] == buckets(b7=10)
    assert all(r["pool_max"] == 7 * len(first.pool_figures()) and r["pool_open"] >= 1 for r in rows)

    window = await read_window(second.admin, seconds=3600, step=60)
    assert window.sources == 2
    assert window.total.error_rate == pytest.approx(10 / 40)
    assert window.total.p50 == pytest.approx(0.0025 + 0.0025 * 20 / 30)  # the 20th of 40 is in (2.5, 5] ms
    assert window.total.p99 == pytest.approx(0.1 + 0.15 * (39.6 - 30) / 10)


async def test_old_samples_are_pruned_and_counts_survive_a_failed_write(two_apps: list[Database]) -> None:
    app = two_apps[0]
    await app.admin.execute(
        "INSERT INTO gatehouse.metrics_samples (sampled_at, source, seconds, requests, errors, latency_counts, "
        "latency_sum, pool_in_use, pool_open, pool_max) VALUES (now() - interval '2 hours', 'gone', 10, 1, 0, $1, 0, "
        "0, 0, 0)", EMPTY)
    tally = Tally()
    sampler = Sampler(app, tally, interval=3600, retention=3600, max_per_pool=10)
    tally.observe(SCOPE, 200, 0.01)
    await app.admin.execute("ALTER TABLE gatehouse.metrics_samples ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await sampler.sample()
    finally:
        await app.admin.execute("ALTER TABLE gatehouse.metrics_samples DROP CONSTRAINT refuse_all")
    tally.observe(SCOPE, 200, 0.01)
    await sampler.start()
    await sampler.stop()  # the last sample is written on the way out
    assert await app.admin.fetchval("SELECT count(*) FROM gatehouse.metrics_samples WHERE source = 'gone'") == 0
    assert await app.admin.fetchval(
        "SELECT requests FROM gatehouse.metrics_samples WHERE source = $1", sampler.source) == 2
