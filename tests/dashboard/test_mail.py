"""The Mail section against a real SMTP server (aiosmtpd): a refused mail shows as failed with the
server's answer and is sent once retried; cancel asks first; the test email goes through the
outbox; template previews are sandboxed; auth mail bodies are never shown; every change is audited,
refused without CSRF, and hostile input gets a 4xx with everything shown escaped."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from gatehouse.core.embedded import free_port
from gatehouse.mail.render import KINDS
from tests.auth.helpers import Auth
from tests.dashboard.helpers import Visitor, app_credentials, fetch
from tests.smtp import Collector, smtp_env
from tests.support import RunningServer, run_sql

REFUSAL = "554 5.7.1 Message refused by policy"


@dataclass
class Switchable(Collector):
    """The tests' SMTP server: refuses every message at DATA while ``refusing``, else accepts it."""

    refusing: bool = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refusing:
            return REFUSAL
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture(scope="module")
def smtp_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def smtp(smtp_port: int) -> Iterator[Switchable]:
    handler = Switchable()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port, server_hostname="mail.test")
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], smtp: Switchable, smtp_port: int) -> RunningServer:
    return server_factory(env=smtp_env(smtp_port) | {"GATEHOUSE_MAIL_MAX_ATTEMPTS": "1"})


def status_of(database_url: str, outbox_id: int) -> str:
    return str(run_sql(database_url, "SELECT status FROM gatehouse.mail_outbox WHERE id = $1", outbox_id)[0]["status"])


def wait_for_status(database_url: str, outbox_id: int, wanted: str) -> None:
    """Poll until the sender has moved the message to ``wanted`` (it runs in the server's process)."""
    deadline = time.monotonic() + 30
    while (found := status_of(database_url, outbox_id)) != wanted:
        assert time.monotonic() < deadline, f"message {outbox_id} stayed {found}, never {wanted}"
        time.sleep(0.05)


def queued_id(answer: Any) -> int:
    """The id of the message a test-email POST queued: it redirects to that message's page."""
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/_/mail/(\d+)\?done=test", answer.headers["location"])
    assert found, answer.headers["location"]
    return int(found[1])


def queue(database_url: str, *, kind: str = "confirmation", to: str = "someone@example.com", subject: str = "Hello",
          text: str = "body", status: str = "pending") -> int:
    """A message waiting an hour (so the sender leaves it alone), or in ``status``."""
    (row,) = run_sql(
        database_url,
        "INSERT INTO gatehouse.mail_outbox (kind, to_address, subject, text_body, status, next_attempt_at) "
        "VALUES ($1, $2, $3, $4, $5, now() + interval '1 hour') RETURNING id", kind, to, subject, text, status)
    return int(row["id"])


def audit_actions(database_url: str, target: str) -> list[str]:
    return [row["action"] for row in run_sql(
        database_url, "SELECT action FROM gatehouse.dashboard_audit WHERE target = $1 ORDER BY id", target)]


def test_a_refused_mail_shows_the_servers_answer_and_is_sent_once_retried(
    visitor: Visitor, smtp: Switchable, database_url: str,
) -> None:
    smtp.refusing = True
    before = len(smtp.received)
    outbox_id = queued_id(visitor.post("/_/mail/test", {"to": "retry-me@example.com"}))
    page = visitor.get(f"/_/mail/{outbox_id}?done=test")
    assert "The test email is in the outbox" in page.text and "retry-me@example.com" in page.text
    wait_for_status(database_url, outbox_id, "failed")
    failed = visitor.get("/_/mail", params={"status": "failed"})
    assert f'id="message-{outbox_id}"' in failed.text and REFUSAL in failed.text
    message = visitor.get(f"/_/mail/{outbox_id}")
    assert "not delivered" in message.text and REFUSAL in message.text and 'id="retry"' in message.text
    assert 'id="body"' in message.text  # a test email's body holds no credential: shown

    smtp.refusing = False
    retried = visitor.post(f"/_/mail/{outbox_id}/retry", {})
    assert retried.status_code == 303 and retried.headers["location"] == f"/_/mail/{outbox_id}?done=retry"
    assert "The message is due now" in visitor.get(retried.headers["location"]).text
    wait_for_status(database_url, outbox_id, "sent")
    (arrived,) = smtp.received[before:]
    assert arrived.recipients == ["retry-me@example.com"] and arrived.email["Subject"].startswith("Test message")
    page = visitor.get(f"/_/mail/{outbox_id}")
    assert "accepted" in page.text and "250 2.0.0 Ok: queued as" in page.text and 'id="retry"' not in page.text
    assert audit_actions(database_url, str(outbox_id)) == ["mail_test", "mail_retry"]
    again = visitor.post(f"/_/mail/{outbox_id}/retry", {})  # sent: nothing to retry
    assert again.status_code == 409 and "A message that is sent cannot be retried" in again.text


def test_cancel_asks_first_then_never_sends(visitor: Visitor, database_url: str) -> None:
    outbox_id = queue(database_url)
    ask = visitor.post(f"/_/mail/{outbox_id}/cancel", {})
    assert ask.status_code == 200 and 'id="question"' in ask.text and 'name="confirmed" value="yes"' in ask.text
    assert status_of(database_url, outbox_id) == "pending"
    done = visitor.post(f"/_/mail/{outbox_id}/cancel", {"confirmed": "yes"})
    assert done.status_code == 303 and "it will not be sent" in visitor.get(done.headers["location"]).text
    assert "it will not be sent" not in visitor.get(f"/_/mail/{outbox_id}?done=%3Cscript%3E").text
    assert status_of(database_url, outbox_id) == "cancelled"
    assert audit_actions(database_url, str(outbox_id)) == ["mail_cancel"]
    for action in ("cancel", "retry"):
        refused = visitor.post(f"/_/mail/{outbox_id}/{action}", {"confirmed": "yes"})
        assert refused.status_code == 409 and "A message that is cancelled cannot be" in refused.text
    assert audit_actions(database_url, str(outbox_id)) == ["mail_cancel"]
    listed = visitor.get("/_/mail", params={"status": "cancelled"})
    assert f'id="message-{outbox_id}"' in listed.text


def test_the_test_email_goes_through_the_outbox_and_arrives(visitor: Visitor, smtp: Switchable,
                                                             database_url: str) -> None:
    smtp.refusing = False
    before = len(smtp.received)
    outbox_id = queued_id(visitor.post("/_/mail/test", {"to": "Ops.Check@Example.com"}))
    wait_for_status(database_url, outbox_id, "sent")
    (arrived,) = smtp.received[before:]
    assert arrived.recipients == ["ops.check@example.com"]
    body = arrived.email.get_body(("plain",))
    assert body is not None and "If you can read it, outgoing mail works" in body.get_content()


def test_auth_mail_bodies_are_not_shown_and_codes_in_subjects_are_masked(visitor: Visitor, database_url: str) -> None:
    link = "http://127.0.0.1/auth/v1/verify?token=live-secret-token&type=signup"
    outbox_id = queue(database_url, kind="confirmation", subject="Your code is 482913",
                      text=f"Confirm: {link}\nor enter 482913")
    for page in (visitor.get(f"/_/mail/{outbox_id}"), visitor.get("/_/mail")):
        assert page.status_code == 200
        assert "live-secret-token" not in page.text and "482913" not in page.text
    message = visitor.get(f"/_/mail/{outbox_id}")
    assert 'id="body-hidden"' in message.text and "Your code is \u2022\u2022\u2022\u2022\u2022\u2022" in message.text
    assert 'href="/_/mail/templates/confirmation"' in message.text


@pytest.mark.parametrize("kind", KINDS)
def test_each_template_is_previewed_with_sample_data_in_a_sandbox(visitor: Visitor, kind: str) -> None:
    page = visitor.get(f"/_/mail/templates/{kind}")
    assert page.status_code == 200
    (frame,) = re.findall(r"<iframe[^>]*>", page.text)
    assert 'sandbox=""' in frame
    srcdoc = re.search(r'srcdoc="([^"]*)"', frame)
    assert srcdoc and "<" not in srcdoc[1]  # the email's HTML is an escaped attribute value, not markup
    document = html.unescape(srcdoc[1])
    assert document.lstrip().lower().startswith("<!doctype html") and "ada@example.com" in document
    if kind not in ("test",):
        assert "123456" in page.text  # the sample code, in the text part at least
    assert "Content-Security-Policy" in page.headers and "script-src 'self'" in page.headers["content-security-policy"]


def test_xss_in_a_subject_or_recipient_is_shown_escaped(visitor: Visitor, database_url: str) -> None:
    outbox_id = queue(database_url, kind="test", to='"<img src=x onerror=alert(1)>"@example.com',
                      subject="<script>alert('subject')</script>", text="<b>bold</b>")
    for page in (visitor.get("/_/mail"), visitor.get(f"/_/mail/{outbox_id}")):
        assert "<script>alert('subject')" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(" in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in visitor.get(f"/_/mail/{outbox_id}").text


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/_/mail", {"status": "' OR 1=1 --"}, 400),
        ("/_/mail", {"status": "<script>"}, 400),
        ("/_/mail", {"before": "1; DROP TABLE gatehouse.mail_outbox"}, 400),
        ("/_/mail", {"after": "-1"}, 400),
        ("/_/mail", {"before": "9" * 40}, 400),
        ("/_/mail/abc", {}, 404),
        ("/_/mail/1%20OR%201=1", {}, 404),
        ("/_/mail/0", {}, 404),
        ("/_/mail/999999999999", {}, 404),
        ("/_/mail/templates/..%2F..%2Fbase", {}, 404),
        ("/_/mail/templates/_layout", {}, 404),
        ("/_/mail/templates/nope", {}, 404),
    ],
)
def test_hostile_parameters_get_a_4xx(visitor: Visitor, database_url: str, path: str, params: dict[str, str],
                                      status: int) -> None:
    page = visitor.get(path, params=params)
    assert page.status_code == status
    assert "<script>" not in page.text.split("</header>", 1)[-1]
    assert fetch(database_url, "SELECT to_regclass('gatehouse.mail_outbox') IS NOT NULL AS ok")[0]["ok"]


def test_hostile_posts_change_nothing(visitor: Visitor, database_url: str) -> None:
    outbox_id = queue(database_url)
    count = fetch(database_url, "SELECT count(*) AS n FROM gatehouse.mail_outbox")[0]["n"]
    for csrf in ("", "wrong" * 9):
        assert visitor.post(f"/_/mail/{outbox_id}/cancel", {"confirmed": "yes"}, csrf=csrf).status_code == 403
        assert visitor.post(f"/_/mail/{outbox_id}/retry", {}, csrf=csrf).status_code == 403
        assert visitor.post("/_/mail/test", {"to": "csrf@example.com"}, csrf=csrf).status_code == 403
    for path in (f"/_/mail/{outbox_id}/delete", "/_/mail/abc/cancel", f"/_/mail/{outbox_id}%00/retry"):
        assert visitor.post(path, {"confirmed": "yes"}).status_code == 404
    for to, status in (("x" * 5000 + "@example.com", 400), ("<script>alert(1)</script>", 400), ("", 400)):
        page = visitor.post("/_/mail/test", {"to": to})
        assert page.status_code == status and 'id="error"' in page.text
        assert "<script>alert(1)" not in page.text
    assert status_of(database_url, outbox_id) == "pending"
    assert fetch(database_url, "SELECT count(*) AS n FROM gatehouse.mail_outbox")[0]["n"] == count
    assert audit_actions(database_url, str(outbox_id)) == []


def test_no_dashboard_session_no_access(server: RunningServer, database_url: str) -> None:
    outbox_id = queue(database_url)
    auth = Auth(server)
    _, session = auth.confirmed_user()
    for headers in [{}, *app_credentials(server, session)]:
        for path in ("/_/mail", f"/_/mail/{outbox_id}", "/_/mail/templates/confirmation"):
            answer = auth.http.get(f"{server.url}{path}", headers=headers)
            assert answer.status_code == 303 and answer.headers["location"] == "/_/login", (path, headers)
        for path in (f"/_/mail/{outbox_id}/cancel", "/_/mail/test"):
            answer = auth.http.post(f"{server.url}{path}", headers=headers, data={"confirmed": "yes", "to": "a@b.co"})
            assert answer.status_code in (303, 403), (path, headers)
    auth.close()
    assert status_of(database_url, outbox_id) == "pending"


def test_the_outbox_pages_through_a_status_both_ways(visitor: Visitor, database_url: str) -> None:
    fetch(database_url, "INSERT INTO gatehouse.mail_outbox (kind, to_address, subject, text_body, status, attempts) "
          "SELECT 'test', format('pager-%s@example.com', n), 'paged', 'body', 'failed', 1 "
          "FROM generate_series(1, 110) AS n RETURNING id")
    failed = [row["id"] for row in fetch(
        database_url, "SELECT id FROM gatehouse.mail_outbox WHERE status = 'failed' ORDER BY id DESC")]
    pages: list[list[int]] = []
    link: str | None = "/_/mail?status=failed"
    while link:
        page = visitor.get(link)
        assert page.status_code == 200
        pages.append([int(found) for found in re.findall(r'id="message-(\d+)"', page.text)])
        older = re.search(r'id="older" rel="next" href="([^"]+)"', page.text)
        link = html.unescape(older[1]) if older else None
    assert [len(ids) for ids in pages] == [50, 50, len(failed) - 100] and [i for ids in pages for i in ids] == failed
    assert 'id="newer"' in page.text
    back: list[list[int]] = [pages[-1]]
    while newer := re.search(r'id="newer" rel="prev" href="([^"]+)"', page.text):
        page = visitor.get(html.unescape(newer[1]))
        back.insert(0, [int(found) for found in re.findall(r'id="message-(\d+)"', page.text)])
    assert back == pages
    assert f'id="fig-failed">{len(failed)}<' in page.text
