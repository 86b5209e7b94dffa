"""Prometheus metrics at /metrics: on in development, off in production, summed over workers."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client import generate_latest

from gatehouse.core.metrics import REQUESTS, observe
from tests.support import RunningServer


def test_metrics_count_requests_by_route_and_status(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(workers=2)
    key = {"apikey": server.keys.publishable_key}
    for _ in range(6):
        httpx.get(f"{server.url}/rest/v1/profiles", headers=key)
    httpx.get(f"{server.url}/rest/v1/nothing_here", headers=key)
    body = httpx.get(f"{server.url}/metrics").text
    assert 'gatehouse_requests_total{method="GET",route="/rest/v1/{table}",status="200"} 6.0' in body
    assert 'route="/rest/v1/{table}",status="404"' in body
    assert "gatehouse_request_duration_seconds_bucket" in body
    assert 'gatehouse_db_pool_connections{pool="request",state="idle"' in body
    assert "gatehouse_mail_outbox_backlog" in body


def test_metrics_are_off_in_production(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(env={"GATEHOUSE_ENV": "production"})
    assert httpx.get(f"{server.url}/metrics").status_code == 404


def test_label_values_stay_bounded_whatever_clients_send() -> None:
    def series() -> int:
        return sum(len(metric.samples) for metric in REQUESTS.collect())

    def request(i: int) -> None:
        observe({"type": "http", "method": f"BREW{i}", "path": f"/rest/v1/t{i}", "root_path": ""}, 404, 0.001)

    request(0)
    before = series()
    for i in range(1, 50):
        request(i)
    assert series() == before  # one series, however many methods and paths
    assert 'method="OTHER",route="unmatched",status="404"' in generate_latest().decode()
