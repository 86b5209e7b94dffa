"""The floor: the SQL Gatehouse runs for a step, sent straight through asyncpg with no HTTP.

``concurrency`` tasks in this process, each with its own connection, repeat one operation for
``seconds``; the figures are computed like wrk's (requests per second, latency percentiles).
What is left out against Gatehouse is everything but PostgreSQL and the driver: HTTP, JSON
requests, the JWT check, planning and rendering.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from bench.harness import Figures, percentile

RUN_AS = "SELECT body, page_count, total FROM gatehouse.run_as($1, $2, $3, $4, $5::jsonb)"

#: One operation of task ``index`` on its connection.
Operation = Callable[[asyncpg.Connection, int], Awaitable[None]]


async def measure(url: str, operation: Operation, *, concurrency: int, seconds: float) -> Figures:
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await operation(conn, index)
                except asyncpg.PostgresError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

    try:
        began = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        await pool.close()
    return Figures(len(latencies) / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000,
                   errors)


def run_as(sql: str, values_for: Callable[[int, int], list[Any]], claims_for: Callable[[int], dict[str, Any]],
           *, readonly: bool) -> Operation:
    """A generated data statement as the caller, in one round trip, as ``Database.run_as`` sends it."""
    counter = 0

    async def operation(conn: asyncpg.Connection, index: int) -> None:
        nonlocal counter
        counter += 1
        row = await conn.fetchrow(RUN_AS, "authenticated", orjson.dumps(claims_for(index)).decode(), readonly, sql,
                                  orjson.dumps(values_for(index, counter)).decode())
        if row is None or row["page_count"] != 1:
            raise asyncpg.PostgresError(f"expected one row, got {row and row['page_count']}")

    return operation


def rotation(refresh_tokens: list[str], refresh_sql: str, reuse_interval: int = 10) -> Operation:
    """Refresh-token rotation as ``Sessions.refresh`` does it: one statement rotates and reads the user.

    Task ``i`` owns session ``i`` and always presents the token it rotated to last.
    """
    current = list(refresh_tokens)

    async def operation(conn: asyncpg.Connection, index: int) -> None:
        successor = secrets.token_urlsafe(32)
        row = await conn.fetchrow(refresh_sql, _sha256(current[index]), _sha256(successor), reuse_interval)
        if row is None or row["rotation_outcome"] != "rotated":
            raise asyncpg.PostgresError(f"rotation: {row and row['rotation_outcome']}")
        current[index] = successor

    return operation


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


__all__ = ["measure", "rotation", "run_as"]
