"""The Health section on a server of two worker processes with /metrics off: both workers write
samples, the page and its JSON show the whole deployment's last hour, the overview loads the
figures, and nobody without a dashboard session sees any of it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest

from tests.auth.helpers import Auth
from tests.dashboard.helpers import Visitor, app_credentials, fetch
from tests.support import RunningServer

ENV = {"GATEHOUSE_METRICS": "false", "GATEHOUSE_METRICS_SAMPLE_INTERVAL": "0.2"}


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env=ENV, workers=2)


@pytest.fixture(scope="module")
def traffic(server: RunningServer, database_url: str) -> int:
    """Requests on fresh connections (so both workers get some), then wait until they are all sampled."""
    sent = 60
    for index in range(sent):
        httpx.get(f"{server.url}/health/live" if index % 3 else f"{server.url}/no/such/page")
    deadline = time.monotonic() + 30
    while True:
        (row,) = fetch(database_url, "SELECT count(DISTINCT source) AS sources, coalesce(sum(requests), 0) AS requests "
                       "FROM gatehouse.metrics_samples")
        if row["sources"] >= 2 and row["requests"] >= sent:
            return sent
        assert time.monotonic() < deadline, f"samples never showed both workers and every request: {dict(row)}"
        time.sleep(0.1)


def test_both_workers_write_samples_with_metrics_off(traffic: int, server: RunningServer, database_url: str) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 404  # Prometheus' endpoint is off
    rows = fetch(database_url, "SELECT source, sum(requests) AS requests, min(pool_max) AS pool_max, "
                 "max(pool_open) AS pool_open FROM gatehouse.metrics_samples GROUP BY source")
    assert len(rows) >= 2
    pids = {row["source"].split(":")[1] for row in rows}
    assert len(pids) >= 2  # two processes, not one writing twice
    assert all(row["pool_max"] == 20 and row["pool_open"] >= 1 for row in rows)  # two pools of 10 each


def test_the_health_json(traffic: int, visitor: Visitor) -> None:
    answer = visitor.get("/_/health/data")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert answer.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in answer.headers[
        "content-security-policy"]
    body = answer.json()
    assert set(body) == {"step", "now", "processes", "series", "hour", "outbox_backlog", "database_bytes"}
    assert body["step"] == 60 and body["processes"] >= 2
    series = body["series"]
    assert set(series) == {"time", "requests_per_second", "error_rate", "p50_ms", "p99_ms", "pool_in_use", "pool_max"}
    assert all(len(values) == 60 for values in series.values())
    assert all(later - earlier == 60 for earlier, later in zip(series["time"], series["time"][1:], strict=False))
    assert series["time"][-1] <= body["now"] < series["time"][-1] + 60
    hour = body["hour"]
    assert hour["requests_per_second"] > 0 and hour["error_rate"] == 0  # 404s are not errors: 5xx only
    assert 0 < hour["p50_ms"] <= hour["p99_ms"] <= 10_000
    assert hour["pool_max"] == pytest.approx(40)  # two workers, two pools of 10 each
    assert isinstance(body["outbox_backlog"], int) and body["database_bytes"] > 1_000_000


def test_the_page_works_without_script(traffic: int, visitor: Visitor) -> None:
    page = visitor.get("/_/health")
    assert page.status_code == 200
    table = page.text.split('id="health-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 13  # the heading and twelve five-minute steps
    assert re.search(r'id="fig-rate">[0-9.]+/s<', page.text) and re.search(r'id="fig-p99">[0-9.]+ ms<', page.text)
    assert re.search(r'id="fig-size">[0-9.]+ (MiB|GiB)<', page.text)
    assert re.findall(r"<script[^>]*>", page.text) == [
        '<script src="/_/static/htmx.min.js" defer>', '<script src="/_/static/uplot.iife.min.js" defer>',
        '<script src="/_/static/health_charts.js" defer>']  # no inline script: the CSP allows none
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path in ("/_/static/uplot.iife.min.js", "/_/static/uplot.min.css", "/_/static/health_charts.js"):
        assert visitor.get(path).status_code == 200


def test_the_overview_loads_the_figures(traffic: int, visitor: Visitor) -> None:
    overview = visitor.get("/_/")
    assert 'hx-get="/_/health/figures"' in overview.text and 'href="/_/health"' in overview.text
    figures = visitor.get("/_/health/figures", headers={"hx-request": "true", "x-csrf-token": visitor.csrf})
    assert figures.status_code == 200 and 'id="health-figures"' in figures.text
    assert "<html" not in figures.text  # a fragment
    assert visitor.get("/_/health/figures", headers={"hx-request": "true"}).status_code == 403  # htmx without CSRF


def test_no_dashboard_session_no_health(server: RunningServer) -> None:
    auth = Auth(server)
    _, session = auth.confirmed_user()
    for headers in [{}, *app_credentials(server, session), {"cookie": "gh-dash=" + "A" * 43}]:
        for path in ("/_/health", "/_/health/data", "/_/health/figures", "/_/health/data?seconds=99999999"):
            answer = auth.http.get(f"{server.url}{path}", headers=headers)
            assert answer.status_code == 303 and answer.headers["location"] == "/_/login", (path, headers)
    for method in ("POST", "DELETE"):
        assert auth.http.request(method, f"{server.url}/_/health/data").status_code == 405
    auth.close()
