"""Prometheus metrics: requests by route and status, latencies, pool usage, outbox backlog.

On by default in development and off in production (``GATEHOUSE_METRICS``). With several worker
processes the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder, so that a scrape of any
worker reports the sum over all of them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

REQUESTS = Counter("gatehouse_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "gatehouse_request_duration_seconds", "Time to answer an HTTP request", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POOL = Gauge("gatehouse_db_pool_connections", "Database pool connections", ["pool", "state"],
             multiprocess_mode="livesum")
OUTBOX = Gauge("gatehouse_mail_outbox_backlog", "Emails not yet sent", multiprocess_mode="max")


def route_of(scope: Scope) -> str:
    """The matched route's template (/rest/v1/{table}), never the raw path: bounded label values."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    return f"{scope.get('root_path', '')}{path}" or "/"


def observe(scope: Scope, status: int, seconds: float) -> None:
    """Count one answered request (the request-context middleware calls this)."""
    route = route_of(scope)
    REQUESTS.labels(scope["method"], route, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


async def metrics(request: Request) -> Response:
    database = request.app.state.database
    for name, pool in (("admin", database._admin), ("request", database._request)):  # noqa: SLF001
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            POOL.labels(name, "in_use").set(size - idle)
            POOL.labels(name, "idle").set(idle)
    backlog: Any = await database.admin.fetchval(
        "SELECT count(*) FROM gatehouse.mail_outbox WHERE status IN ('pending', 'sending')"
    )
    OUTBOX.set(backlog)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
