"""Data API speed: an authenticated single-row profile read (the tutorial's account-page query).

Gatehouse over HTTP (wrk, 16 connections) against the floor: the very statement Gatehouse
generates, run through asyncpg's ``gatehouse.run_as`` call by 16 concurrent tasks in this
process (no HTTP, no JSON parsing of requests, no JWT check). Median of 3 runs each.

    python bench/rest_read.py [--workers N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import asyncpg
import jwt as pyjwt

from bench.harness import Figures, confirmed_user, gatehouse, median_of, percentile, table, wrk
from gatehouse.core.config import load_settings
from gatehouse.core.db import with_credentials
from gatehouse.core.keys import load_keys

SELECT = "full_name,username,website,avatar_url"


async def driver_floor(database_url: str, password: str, sql: str, values: list[object], claims: dict[str, object],
                       seconds: float, concurrency: int = 16) -> Figures:
    pool = await asyncpg.create_pool(with_credentials(database_url, "authenticator", password),
                                     min_size=concurrency, max_size=concurrency)
    latencies: list[float] = []
    errors = 0
    claims_text = json.dumps(claims)
    params = json.dumps(values)
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await conn.fetchrow("SELECT body, page_count, total FROM gatehouse.run_as($1, $2, true, $3, $4::jsonb)",
                                        "authenticated", claims_text, sql, params)
                except asyncpg.PostgresError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    await pool.close()
    return Figures(len(latencies) / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000, errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with gatehouse(workers=args.workers) as server:
        session = confirmed_user(server, "bench@example.com")
        uid = session["user"]["id"]  # type: ignore[index]
        url = f"{server.url}/rest/v1/profiles?select={SELECT}&id=eq.{uid}"
        headers = {"apikey": server.publishable_key, "Authorization": f"Bearer {session['access_token']}",
                   "Accept": "application/vnd.pgrst.object+json"}
        http_runs = [wrk(url, headers, seconds=args.seconds) for _ in range(args.runs)]

        # The same statement Gatehouse generates for that request, through the driver.
        from gatehouse.rest import grammar, sqlgen
        from gatehouse.rest.plan import Planner
        from gatehouse.rest.schema import SchemaCache

        settings = load_settings(data_dir=server.data_dir)
        keys = load_keys(settings)
        port = (server.data_dir / "postgres.port").read_text().strip()
        password = json.loads((server.data_dir / "postgres.json").read_text())["password"]
        database_url = f"postgresql://postgres:{password}@127.0.0.1:{port}/gatehouse"

        async def floor_runs() -> list[Figures]:
            conn = await asyncpg.connect(database_url)
            cache = await SchemaCache.load(conn, ("public",))
            await conn.close()
            planner = Planner(cache, "public", max_rows=1000)
            query = grammar.parse_query([("select", SELECT), ("id", f"eq.{uid}")])
            params = sqlgen.Params()
            sql = sqlgen.read_sql(planner.read(planner.table("profiles"), query), params, single=True)
            # The token's own claims: session_id included, so the floor pays for the session check too.
            claims = pyjwt.decode(str(session["access_token"]), options={"verify_signature": False})
            return [await driver_floor(database_url, keys.authenticator_password, sql, params.values, claims, args.seconds)
                    for _ in range(args.runs)]

        floor = asyncio.run(floor_runs())

    (http, http_range), (base, base_range) = median_of(http_runs), median_of(floor)
    rows = [
        ["system", "req/s", "min-max", "p50 ms", "p99 ms", "errors"],
        [f"gatehouse HTTP ({args.workers} workers)", f"{http.rps:.0f}", f"{http_range[0]:.0f}-{http_range[1]:.0f}",
         f"{http.p50_ms:.2f}", f"{http.p99_ms:.2f}", str(http.errors)],
        ["driver floor (asyncpg run_as)", f"{base.rps:.0f}", f"{base_range[0]:.0f}-{base_range[1]:.0f}",
         f"{base.p50_ms:.2f}", f"{base.p99_ms:.2f}", str(base.errors)],
    ]
    print(table(rows))
    print(f"\nratio gatehouse / driver floor: {http.rps / base.rps:.2f}")
    out = Path(__file__).parent / "results" / "rest_read.json"
    out.write_text(json.dumps({"gatehouse": vars(http), "floor": vars(base), "workers": args.workers,
                               "ratio": http.rps / base.rps}, indent=2))


if __name__ == "__main__":
    main()
