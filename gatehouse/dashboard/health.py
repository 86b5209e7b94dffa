"""The Health section: the last hour of every process at a glance, and the figures beside it.

The numbers come from ``gatehouse.metrics_samples`` (``core/samples.py``: each process writes its
request counts, latency buckets and pool use there), so every process contributes whichever one
answers, with or without ``GATEHOUSE_METRICS``. The page is complete without script: the figures
and a table of the hour in five-minute steps are HTML. With script, ``health_charts.js`` fetches
``/_/health/data`` (the same numbers in one-minute steps, as JSON, for a signed-in administrator
only) and draws them with the vendored uPlot.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.core.http import JSONResponse
from gatehouse.core.samples import Slot, Window, database_size, read_window
from gatehouse.dashboard.pages import dashboard, finish, render, signed_in
from gatehouse.mail.outbox import backlog

HOUR = 3600
#: The charts' step (JSON) and the table's (HTML), in seconds.
CHART_STEP = 60
TABLE_STEP = 300


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def slot_json(slot: Slot) -> dict[str, Any]:
    return {
        "requests_per_second": _round(slot.requests_per_second), "error_rate": _round(slot.error_rate, 6),
        "p50_ms": _ms(slot.p50), "p99_ms": _ms(slot.p99), "pool_in_use": _round(slot.pool_in_use, 2),
        "pool_max": _round(slot.pool_max, 2),
    }


def window_json(window: Window) -> dict[str, Any]:
    """The window as columns (what uPlot draws): times in Unix seconds, a null where nothing was sampled."""
    columns: dict[str, list[Any]] = {"time": [int(slot.start.timestamp()) for slot in window.slots]}
    for slot in window.slots:
        for name, value in slot_json(slot).items():
            columns.setdefault(name, []).append(value)
    return {"step": window.step, "now": window.now.timestamp(), "processes": window.sources, "series": columns,
            "hour": slot_json(window.total)}


def rate(value: float | None) -> str:
    return "no data" if value is None else f"{value:.2f}/s"


def percent(value: float | None) -> str:
    return "no data" if value is None else f"{value * 100:.2f} %"


def millis(value: float | None) -> str:
    if value is None:
        return "no data"
    return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"


def pool(slot: Slot) -> str:
    if slot.pool_in_use is None:
        return "no data"
    return f"{slot.pool_in_use:.1f} of {slot.pool_max or 0:.0f}"


def size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


FORMATS: dict[str, Any] = {"rate": rate, "percent": percent, "millis": millis, "pool": pool, "size": size}


async def health_page(request: Request) -> Response:
    """``GET /_/health``: figures, the charts' places, and the table of the last hour."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    db = dashboard(request).accounts.pool
    table = await read_window(db, seconds=HOUR, step=TABLE_STEP)
    return render(request, current, "health.html", section="health", window=table, backlog=await backlog(db),
                  database_bytes=await database_size(db), **FORMATS)


async def health_data(request: Request) -> Response:
    """``GET /_/health/data``: the last hour in one-minute steps, with the figures, as JSON."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    db = dashboard(request).accounts.pool
    body = window_json(await read_window(db, seconds=HOUR, step=CHART_STEP))
    body |= {"outbox_backlog": await backlog(db), "database_bytes": await database_size(db)}
    return finish(JSONResponse(body), current)


async def health_figures(request: Request) -> Response:
    """``GET /_/health/figures``: the overview's health figures (the overview page loads them with htmx)."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    db = dashboard(request).accounts.pool
    hour = await read_window(db, seconds=HOUR, step=HOUR)
    return render(request, current, "health_figures.html", section="overview", total=hour.total,
                  database_bytes=await database_size(db), **FORMATS)
