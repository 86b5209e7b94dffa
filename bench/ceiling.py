"""The Python ceiling for step (c): the least a Python ASGI server must do to read one's own profile.

A bare Starlette app on uvicorn (same workers and uvicorn options as ``gatehouse serve``) that
checks the bearer JWT with Gatehouse's own verifier (ES256 with the project key, verified tokens
remembered as Gatehouse does) and runs the very statement Gatehouse generates for
``GET /rest/v1/profiles?select=...&id=eq.UID`` (Accept: object) through ``gatehouse.run_as`` in
one round trip on an asyncpg pool logged in as ``authenticator``. No API-key check, no parsing
of the query grammar, no planning: what is left is HTTP, JSON and the driver.

The parent passes its settings in ``BENCH_CEILING`` (JSON): ``data_dir``, ``database_url``
(authenticator), ``sql``, ``values`` and ``uid_index`` (the place of the user id in them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatehouse.core.embedded import free_port

OBJECT = "application/vnd.pgrst.object+json"
RUN_AS = "SELECT body, page_count FROM gatehouse.run_as('authenticated', $1, true, $2, $3::jsonb)"


def _config() -> dict[str, Any]:
    return orjson.loads(os.environ["BENCH_CEILING"])  # type: ignore[no-any-return]


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    from gatehouse.core.config import load_settings
    from gatehouse.core.keys import JWTVerifier, load_keys

    config = _config()
    app.state.verifier = JWTVerifier(load_keys(load_settings(data_dir=Path(config["data_dir"]))))
    app.state.sql = config["sql"]
    app.state.values = config["values"]
    app.state.uid_index = config["uid_index"]
    # Gatehouse's pool defaults: 1 to 10 connections per worker.
    app.state.pool = await asyncpg.create_pool(config["database_url"], min_size=1, max_size=10)
    yield
    await app.state.pool.close()


async def profile(request: Request) -> Response:
    authorization = request.headers.get("authorization", "")
    if not authorization.lower().startswith("bearer "):
        return Response(b'{"message":"no token"}', 401, media_type="application/json")
    try:
        claims = request.app.state.verifier.verify(authorization[7:])
    except Exception:  # noqa: BLE001 - any bad token is a 401 here
        return Response(b'{"message":"bad token"}', 401, media_type="application/json")
    uid = request.query_params.get("id", "").removeprefix("eq.")
    values = list(request.app.state.values)
    values[request.app.state.uid_index] = uid
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(RUN_AS, orjson.dumps(claims).decode(), request.app.state.sql,
                                  orjson.dumps(values).decode())
    if row["page_count"] != 1:
        return Response(b'{"code":"PGRST116"}', 406, media_type="application/json")
    return Response(row["body"].encode(), 200, media_type=OBJECT)


app = Starlette(routes=[Route("/rest/v1/profiles", profile)], lifespan=lifespan)


@contextmanager
def ceiling(config: dict[str, Any], workers: int = 2) -> Iterator[tuple[str, int]]:
    """Serve the ceiling app with uvicorn on a free loopback port; yield its URL and its pid."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    env = {**os.environ, "BENCH_CEILING": orjson.dumps(config).decode()}
    process = subprocess.Popen(
        [sys.executable, "-c",
         (f"import uvicorn; uvicorn.run('bench.ceiling:app', host='127.0.0.1', port={port}, workers={workers},"
          " log_level='warning', access_log=False, server_header=False, proxy_headers=False)")],
        env=env, cwd=Path(__file__).parent.parent, start_new_session=True,
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/rest/v1/profiles", timeout=1)
                break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"the ceiling app did not start: {log.read().decode()}")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


__all__ = ["app", "ceiling"]
