"""Prometheus metrics: requests by route and status, latencies, pool usage, outbox backlog.

Every label takes a bounded set of values (route templates, never raw paths; known methods;
statuses), so the series each process keeps, in memory and in its multiprocess file, stay few.

On by default in development and off in production (``GATEHOUSE_METRICS``). With several worker
processes the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder, so that a scrape of any
worker reports the sum over all of them.

Each figure comes from whoever owns it, asked at scrape time: the database reports its pools
(``Database.pool_figures``), and services hand the app their own ``Figure``s (the mail outbox
its backlog), which the app passes to ``metrics_endpoint``; core knows no service.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

if TYPE_CHECKING:
    from gatehouse.core.db import Database

#: Upper bounds (seconds) of the latency buckets, here and in the dashboard's samples (core/samples.py).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUESTS = Counter("gatehouse_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "gatehouse_request_duration_seconds", "Time to answer an HTTP request", ["route"], buckets=LATENCY_BUCKETS,
)
POOL = Gauge("gatehouse_db_pool_connections", "Database pool connections", ["pool", "state"],
             multiprocess_mode="livesum")
#: The gauges of services' figures, by name: made once per process, however many apps it builds.
_GAUGES: dict[str, Gauge] = {}


@dataclass(frozen=True)
class Figure:
    """One number a service reports at each scrape, as a gauge without labels.

    ``multiprocess_mode`` says how the workers' values combine (prometheus_client's modes):
    ``max`` for a figure every worker reads from the same database.
    """

    name: str
    documentation: str
    read: Callable[[], Awaitable[float]]
    multiprocess_mode: Literal["max", "min", "livesum", "liveall", "all", "sum"] = "max"

    @property
    def gauge(self) -> Gauge:
        gauge = _GAUGES.get(self.name)
        if gauge is None:
            gauge = _GAUGES[self.name] = Gauge(self.name, self.documentation, multiprocess_mode=self.multiprocess_mode)
        return gauge


#: Methods counted by name; any other (a client may send any token) is counted as OTHER, so that
#: the label values, and the series each process keeps, stay bounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
    method = scope["method"]
    REQUESTS.labels(method if method in METHODS else "OTHER", route, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def metrics_endpoint(database: Database, figures: Sequence[Figure] = ()) -> Callable[[Request], Awaitable[Response]]:
    """The /metrics endpoint: reads the figures, then renders every metric in Prometheus' text format."""
    gauges = [(figure.gauge, figure.read) for figure in figures]  # registered now, before any scrape

    async def metrics(request: Request) -> Response:
        for name, pool in database.pool_figures().items():
            POOL.labels(name, "in_use").set(pool.in_use)
            POOL.labels(name, "idle").set(pool.idle)
        for gauge, read in gauges:
            gauge.set(await read())
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            body = generate_latest(registry)
        else:
            body = generate_latest()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
