"""Rate limits: per IP and per address, counted in PostgreSQL, so shared by every process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.auth.helpers import Auth, new_email, shape
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


def test_a_sign_up_over_the_mail_limit_still_starts_over_and_reveals_nothing(pair: tuple[Auth, Auth]) -> None:
    """Over the per-address mail limit, a sign-up of an unconfirmed address still kills the older
    link (its password may be a stranger's) and answers a lookalike: no mail, nothing told."""
    first, _ = pair
    client = Auth(first.server, source_ip="127.0.0.20")
    try:
        email = new_email()
        owner = client.sign_up(email, "the attackers passphrase").json()  # a new address: mailed
        second = client.sign_up(email).json()  # starts over, mailed (the address's first limited mail)
        link, _ = client.latest_link(email)
        third = client.sign_up(email, "a third passphrase here")  # starts over, over the mail limit
        assert third.status_code == 200
        assert shape(third.json()) == shape(second) and third.json()["id"] not in (owner["id"], second["id"])
        assert len(client.messages(email)) == 2
        assert client.post("/verify", {"type": "email", "token_hash": link}).json()["code"] == "otp_expired"
    finally:
        client.close()
