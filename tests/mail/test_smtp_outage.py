"""SMTP is down: sign-ups still succeed, mail waits; when SMTP returns, each message goes once."""

from __future__ import annotations

import time
from collections.abc import Callable

from gatehouse.core.db import Database
from gatehouse.core.embedded import free_port
from tests.auth.helpers import Auth, new_email
from tests.smtp import SMTPServer, smtp_env
from tests.support import RunningServer


async def test_mail_waits_for_smtp_and_goes_once(
    server_factory: Callable[..., RunningServer], db: Database, smtp_server: Callable[..., SMTPServer]
) -> None:
    port = free_port()  # nothing listens here yet
    server = server_factory(env={**smtp_env(port), "GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    auth = Auth(server)
    emails = [new_email("waiting") for _ in range(3)]
    try:
        for email in emails:
            assert auth.sign_up(email).status_code == 200  # the sign-up does not wait for mail
    finally:
        auth.close()
    deadline = time.monotonic() + 15
    while await db.admin.fetchval("SELECT count(*) FROM gatehouse.mail_attempts WHERE NOT ok") == 0:
        assert time.monotonic() < deadline, "no failed attempt was recorded"
        time.sleep(0.1)
    assert await db.admin.fetchval(
        "SELECT count(*) FROM gatehouse.mail_outbox WHERE to_address = ANY($1::text[]) AND status = 'sent'", emails
    ) == 0
    # SMTP comes back; bring the retries forward instead of waiting out the back-off
    smtp = smtp_server(port=port)
    await db.admin.execute("UPDATE gatehouse.mail_outbox SET next_attempt_at = now() WHERE status = 'pending'")
    await db.admin.execute("NOTIFY gatehouse_mail")
    received = smtp.wait_for_sync(len(emails), timeout=30)
    time.sleep(1.0)
    assert sorted(r for m in smtp.received for r in m.recipients) == sorted(emails)
    assert len(received) == len(emails)
