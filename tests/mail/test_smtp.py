"""SMTPMailer against a real SMTP server: headers, parts, TLS, login, and how failures are reported."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parseaddr, parsedate_to_datetime

import pytest

from gatehouse.core.config import Settings
from gatehouse.core.embedded import free_port
from gatehouse.mail import MailDeliveryError, Message, SMTPMailer, send_test_message
from tests.mail.conftest import SMTPServer, TLSFiles, password_authenticator, smtp_settings

HELLO = Message(to="alice@example.com", subject="Hello", text="Hi Alice", html="<p>Hi <b>Alice</b></p>", kind="test")


async def test_sends_text_and_html_alternative_with_sender_name(settings: Settings, smtp: SMTPServer) -> None:
    answer = await SMTPMailer(smtp_settings(settings, smtp.port)).send(HELLO)

    assert answer == "250 2.0.0 Ok: queued as Q1"
    [received] = smtp.received
    email = received.email
    assert received.sender == "noreply@gatehouse.test"
    assert received.recipients == ["alice@example.com"]
    assert parseaddr(email["From"]) == ("Gatehouse Mail", "noreply@gatehouse.test")
    assert email["To"] == "alice@example.com"
    assert email["Subject"] == "Hello"
    assert email["Auto-Submitted"] == "auto-generated"
    assert parsedate_to_datetime(email["Date"]).tzinfo is not None
    assert email["Message-ID"].startswith("<") and email["Message-ID"].endswith("@gatehouse.test>")
    assert email.get_content_type() == "multipart/alternative"
    assert email.get_body(("plain",)).get_content().strip() == "Hi Alice"  # type: ignore[union-attr]
    assert email.get_body(("html",)).get_content().strip() == "<p>Hi <b>Alice</b></p>"  # type: ignore[union-attr]


async def test_message_id_comes_from_the_message_so_retries_share_it(settings: Settings, smtp: SMTPServer) -> None:
    mailer = SMTPMailer(smtp_settings(settings, smtp.port))
    message = Message(to="a@example.com", subject="s", text="t", message_id="0b9c2f1e-retry")
    await mailer.send(message)
    await mailer.send(message)
    assert [r.email["Message-ID"] for r in smtp.received] == ["<0b9c2f1e-retry@gatehouse.test>"] * 2


async def test_text_only_message_and_non_ascii_sender_name(settings: Settings, smtp: SMTPServer) -> None:
    mailer = SMTPMailer(smtp_settings(settings, smtp.port, smtp_sender_name='Gärtnerei, "Müller" & Co'))
    await mailer.send(Message(to="b@example.com", subject="Grüße\r\nBcc: evil@example.com", text="Hallo"))

    email = smtp.received[0].email
    assert email.get_content_type() == "text/plain"
    assert email["From"].addresses[0].display_name == 'Gärtnerei, "Müller" & Co'
    # A line break in a subject never becomes a header of its own.
    assert email["Subject"] == "Grüße Bcc: evil@example.com"
    assert email["Bcc"] is None
    assert smtp.received[0].recipients == ["b@example.com"]


async def test_login_when_a_user_is_set(
    settings: Settings, smtp_server: Callable[..., SMTPServer], tls_files: TLSFiles
) -> None:
    server = smtp_server(
        tls_context=tls_files.server_context(),
        require_starttls=True,
        authenticator=password_authenticator("mailer", "s3cret"),
        auth_required=True,
    )
    base = smtp_settings(settings, server.port, smtp_tls="starttls", smtp_user="mailer")
    good = base.model_copy(update={"smtp_password": "s3cret"})
    await SMTPMailer(good, tls_context=tls_files.client_context()).send(HELLO)
    assert server.received[0].login == "mailer"

    bad = base.model_copy(update={"smtp_password": "wrong"})
    with pytest.raises(MailDeliveryError) as caught:
        await SMTPMailer(bad, tls_context=tls_files.client_context()).send(HELLO)
    # A login failure is the server's configuration, not this message: it is not a refusal.
    assert caught.value.refused is False
    assert caught.value.smtp_code == 535
    assert len(server.received) == 1


async def test_starttls(settings: Settings, smtp_server: Callable[..., SMTPServer], tls_files: TLSFiles) -> None:
    server = smtp_server(tls_context=tls_files.server_context(), require_starttls=True)
    mailer = SMTPMailer(
        smtp_settings(settings, server.port, smtp_tls="starttls"), tls_context=tls_files.client_context()
    )
    assert (await mailer.send(HELLO)).startswith("250 ")
    assert len(server.received) == 1


async def test_starttls_with_an_untrusted_certificate_fails_unrefused(
    settings: Settings, smtp_server: Callable[..., SMTPServer], tls_files: TLSFiles
) -> None:
    server = smtp_server(tls_context=tls_files.server_context(), require_starttls=True)
    mailer = SMTPMailer(smtp_settings(settings, server.port, smtp_tls="starttls"))  # system trust store
    with pytest.raises(MailDeliveryError) as caught:
        await mailer.send(HELLO)
    assert caught.value.refused is False
    assert "certificate" in caught.value.message.lower()
    assert server.received == []


async def test_implicit_tls(settings: Settings, smtp_server: Callable[..., SMTPServer], tls_files: TLSFiles) -> None:
    server = smtp_server(ssl_context=tls_files.server_context())
    mailer = SMTPMailer(smtp_settings(settings, server.port, smtp_tls="tls"), tls_context=tls_files.client_context())
    assert (await mailer.send(HELLO)).startswith("250 ")
    assert len(server.received) == 1


async def test_server_down_is_not_a_refusal(settings: Settings) -> None:
    port = free_port()
    with pytest.raises(MailDeliveryError) as caught:
        await SMTPMailer(smtp_settings(settings, port)).send(HELLO)
    assert caught.value.refused is False
    assert caught.value.code == "mail_delivery_failed"
    assert f"could not connect to 127.0.0.1:{port}" in caught.value.message


async def test_refused_recipient_is_a_refusal(settings: Settings, smtp: SMTPServer) -> None:
    with pytest.raises(MailDeliveryError) as caught:
        await SMTPMailer(smtp_settings(settings, smtp.port)).send(
            Message(to="refuse-me@example.com", subject="s", text="t")
        )
    assert caught.value.refused is True
    assert caught.value.smtp_code == 550
    assert "mailbox unavailable" in caught.value.message


async def test_malformed_address_is_a_refusal(settings: Settings, smtp: SMTPServer) -> None:
    with pytest.raises(MailDeliveryError) as caught:
        await SMTPMailer(smtp_settings(settings, smtp.port)).send(Message(to="a@b\r\nBcc: c@d", subject="s", text="t"))
    assert caught.value.refused is True
    assert smtp.received == []


def test_mailer_needs_an_smtp_host(settings: Settings) -> None:
    with pytest.raises(MailDeliveryError, match="GATEHOUSE_SMTP_HOST"):
        SMTPMailer(settings)


async def test_send_test_message_reports_the_server_answer(settings: Settings, smtp: SMTPServer) -> None:
    answer = await send_test_message(smtp_settings(settings, smtp.port), "me@example.com")
    assert answer == "250 2.0.0 Ok: queued as Q1"
    email = smtp.received[0].email
    assert email["Subject"] == "Test message from Gatehouse Mail"
    assert "me@example.com" in email.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_send_test_message_explains_missing_or_unreachable_smtp(settings: Settings) -> None:
    with pytest.raises(MailDeliveryError, match="SMTP is not configured: set GATEHOUSE_SMTP_HOST"):
        await send_test_message(settings, "me@example.com")
    with pytest.raises(MailDeliveryError, match="could not connect to 127.0.0.1"):
        await send_test_message(smtp_settings(settings, free_port()), "me@example.com")
