"""The one-time set-up link: printed by `gatehouse serve` in development while no administrator
exists, good once; in production no link is printed and /_/setup/... is a 404."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.dashboard.helpers import PASSWORD, Visitor, new_email
from tests.support import RunningServer, run_sql

LINK = re.compile(r"Set-up link +(http://\S+/_/setup/([\w-]+))")


def test_the_setup_link_works_once_and_only_in_development(
    server_factory: Callable[..., RunningServer], database_url: str
) -> None:
    production = server_factory(env={"GATEHOUSE_ENV": "production"})
    assert "Dashboard" in production.log() and LINK.search(production.log()) is None
    development = server_factory()
    found = LINK.search(development.log())
    assert found, development.log()
    path = found[1].removeprefix(development.url)
    (stored,) = run_sql(database_url, "SELECT token_hash, expires_at - created_at AS life FROM "
                        "gatehouse.dashboard_setup_tokens WHERE used_at IS NULL = $1", True)
    assert stored["token_hash"] != found[2].encode() and stored["life"].total_seconds() == 3600

    blocked = Visitor(production)
    assert blocked.get(path).status_code == 404
    blocked.get("/_/login")
    assert blocked.post(path, {"email": new_email(), "password": PASSWORD, "password2": PASSWORD}).status_code == 404

    visitor = Visitor(development)
    assert visitor.get(path).status_code == 200
    weak = visitor.post(path, {"email": new_email(), "password": "password", "password2": "password"})
    assert weak.status_code == 422  # refused by the password policy, and the link is not used up
    email = new_email()
    made = visitor.post(path, {"email": email, "password": PASSWORD, "password2": PASSWORD})
    assert made.status_code == 303 and made.headers["location"] == "/_/login"
    again = Visitor(development)
    assert again.get(path).status_code == 404
    again.get("/_/login")
    assert again.post(path, {"email": new_email(), "password": PASSWORD, "password2": PASSWORD}).status_code == 404
    assert [r["email"] for r in run_sql(database_url, "SELECT email FROM gatehouse.dashboard_admins WHERE $1", True)] == [email]
    assert visitor.sign_in(email).headers["location"] == "/_/"
    visitor.close()
    again.close()
    blocked.close()
