"""Outside development TOTP is required: an administrator without it enrols before reaching any
page; with it, the code is asked after the password and each code works once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.dashboard.helpers import SECRET, Visitor, age_session, code, make_admin
from tests.support import RunningServer, run_sql


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_ENV": "production"})


def test_production_requires_enrolment_then_a_code_each_time(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    visitor = Visitor(server)
    answer = visitor.sign_in(email)
    assert answer.headers["location"] == "/_/totp"
    (session,) = [c for c in answer.headers.get_list("set-cookie") if c.startswith("gh-dash=")]
    assert "Secure" in [part.strip() for part in session.split(";")]
    for path in ("/_/", "/_/users"):
        assert visitor.get(path).headers["location"] == "/_/totp"  # nothing before enrolment

    page = visitor.get("/_/totp")
    assert page.status_code == 200 and 'src="data:image/svg+xml;base64,' in page.text
    secret = SECRET.search(page.text)[1]  # type: ignore[index]
    (stored,) = run_sql(database_url, "SELECT totp_secret FROM gatehouse.dashboard_admins WHERE email = $1", email)
    assert stored["totp_secret"].startswith("v1:") and secret not in stored["totp_secret"]  # sealed at rest
    assert visitor.post("/_/totp", {"code": "000000" if code(secret) != "000000" else "111111"}).status_code == 400
    first = code(secret)
    assert visitor.post("/_/totp", {"code": first}).headers["location"] == "/_/"
    assert visitor.get("/_/users").status_code == 200
    visitor.post("/_/logout", {})

    again = Visitor(server)
    assert again.sign_in(email).headers["location"] == "/_/login/totp"
    assert again.get("/_/").headers["location"] == "/_/login/totp"
    assert again.get("/_/login/totp").status_code == 200
    replay = again.post("/_/login/totp", {"code": first})
    assert replay.status_code == 400 and "already used" in replay.text
    assert again.post("/_/login/totp", {"code": code(secret, steps_ahead=1)}).headers["location"] == "/_/"
    assert again.get("/_/").status_code == 200
    actions = [r["action"] for r in run_sql(
        database_url, "SELECT action FROM gatehouse.dashboard_audit a JOIN gatehouse.dashboard_admins d "
        "ON d.id = a.admin_id WHERE d.email = $1 ORDER BY a.id", email)]
    assert actions == ["totp_enrolled", "sign_in", "sign_out", "totp_failed", "sign_in"]
    visitor.close()
    again.close()


def test_a_session_waiting_for_its_code_expires(server: RunningServer, database_url: str) -> None:
    email = make_admin(database_url)
    visitor = Visitor(server)
    visitor.sign_in(email)
    age_session(database_url, email, "created_at", "11 minutes")
    assert visitor.get("/_/totp").headers["location"] == "/_/login"
    visitor.close()
