"""Rate limits: per IP and per address, counted in PostgreSQL, so shared by every process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.auth.helpers import Auth, new_email
from tests.support import RunningServer

TIGHT = {
    "GATEHOUSE_RATE_LIMIT_SIGNUP": "3/300",
    "GATEHOUSE_RATE_LIMIT_TOKEN": "4/300",
    "GATEHOUSE_RATE_LIMIT_VERIFY": "3/300",
    "GATEHOUSE_RATE_LIMIT_EMAIL": "100/300",
    "GATEHOUSE_RATE_LIMIT_EMAIL_ADDRESS": "1/60",
}


@pytest.fixture(scope="module")
def pair(server_factory: Callable[..., RunningServer]) -> Iterator[tuple[Auth, Auth]]:
    """Two servers on one database, as behind a load balancer."""
    first, second = Auth(server_factory(env=TIGHT)), Auth(server_factory(env=TIGHT))
    yield first, second
    first.close()
    second.close()


def test_signup_limit_is_shared_by_two_processes(pair: tuple[Auth, Auth]) -> None:
    first, second = pair
    statuses = [first.sign_up(new_email()).status_code, second.sign_up(new_email()).status_code,
                first.sign_up(new_email()).status_code]
    assert statuses == [200, 200, 200]
    limited = second.sign_up(new_email())
    assert limited.status_code == 429
    assert limited.json()["code"] == "over_request_rate_limit"
    assert int(limited.headers["retry-after"]) > 0


def test_token_limit(pair: tuple[Auth, Auth]) -> None:
    first, _ = pair
    codes = [first.log_in(new_email()).status_code for _ in range(5)]
    assert codes[:4] == [400] * 4 and codes[4] == 429


def test_verify_limit(pair: tuple[Auth, Auth]) -> None:
    first, _ = pair
    codes = [first.post("/verify", {"type": "email", "token_hash": "0" * 56}).status_code for _ in range(4)]
    assert codes == [403, 403, 403, 429]


def test_mail_to_one_address_is_limited(pair: tuple[Auth, Auth]) -> None:
    first, second = pair
    email = new_email()
    assert first.post("/recover", {"email": email}).status_code == 200
    limited = second.post("/recover", {"email": email})
    assert limited.status_code == 429
    assert limited.json()["code"] == "over_email_send_rate_limit"
    assert "60 seconds" in limited.json()["message"]
