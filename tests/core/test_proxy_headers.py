"""Behind a reverse proxy: X-Forwarded-For and -Proto count only from GATEHOUSE_TRUSTED_PROXIES.

The per-address limits are where it shows: behind a trusted proxy each client has its own
budget, and a client cannot buy a fresh one by sending the header itself, either straight to
Gatehouse or through the proxy (which appends the address it saw)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gatehouse.core.config import ConfigError, load_settings
from tests.auth.helpers import new_email
from tests.support import RunningServer

LIMITED = {"GATEHOUSE_RATE_LIMIT_TOKEN": "3/300"}


def sign_in(server: RunningServer, forwarded_for: str | None) -> int:
    headers = {"apikey": server.keys.publishable_key}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.post(f"{server.url}/auth/v1/token?grant_type=password", headers=headers, timeout=10,
                      json={"email": new_email("proxy"), "password": "not the password"}).status_code


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(env={**LIMITED, "GATEHOUSE_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"})
    assert [sign_in(server, "203.0.113.7") for _ in range(4)] == [400, 400, 400, 429]
    assert sign_in(server, "203.0.113.8") == 400  # another client, another budget
    # What the client sent comes first, the address the proxy saw last: the last one counts,
    # and addresses of trusted proxies (10.x) are skipped over.
    assert sign_in(server, "198.51.100.1, 203.0.113.7") == 429
    assert sign_in(server, "203.0.113.7, 10.1.2.3") == 429


def test_without_trusted_proxies_the_header_is_ignored(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(env=LIMITED)
    statuses = [sign_in(server, f"203.0.113.{n}") for n in range(4)]
    assert statuses == [400, 400, 400, 429]  # one budget: the connection's own address


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.0/33", "127.0.0.1; DROP"])
def test_a_malformed_list_is_refused_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        load_settings(trusted_proxies=value)
