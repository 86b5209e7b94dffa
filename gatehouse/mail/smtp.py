"""The real mailer: one SMTP session per message, over STARTTLS, implicit TLS or plain.

aiosmtplib's and the network's exceptions stop here: ``send`` raises MailDeliveryError only,
marked ``refused`` when the server turned this message down and not when the server could not
be used (see ``MailDeliveryError``).
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib

from gatehouse.core.config import Settings
from gatehouse.mail.base import MailDeliveryError, Message

#: Seconds for connecting and for each SMTP command. The outbox's lease must outlast a send.
DEFAULT_TIMEOUT = 30.0

#: The server answered and said no to this message: the message, not the server, is the problem.
_REFUSALS = (
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPRecipientRefused,
    aiosmtplib.SMTPSenderRefused,
    aiosmtplib.SMTPDataError,
)


class SMTPMailer:
    def __init__(
        self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT, tls_context: ssl.SSLContext | None = None
    ) -> None:
        """``tls_context`` replaces the system's trust store (tests, or a private CA)."""
        if not settings.smtp_host:
            raise MailDeliveryError("SMTP is not configured: set GATEHOUSE_SMTP_HOST (and the other GATEHOUSE_SMTP_*)")
        self._settings = settings
        self._timeout = timeout
        self._tls_context = tls_context

    @property
    def server(self) -> str:
        return f"{self._settings.smtp_host}:{self._settings.smtp_port}"

    def build(self, message: Message) -> EmailMessage:
        """The MIME message: text, plus an HTML alternative when there is one."""
        settings = self._settings
        sender = Address(display_name=settings.smtp_sender_name, addr_spec=settings.smtp_sender_email)
        email = EmailMessage()
        email["From"] = sender
        email["To"] = message.to
        email["Subject"] = " ".join(message.subject.split())  # never a header line break
        email["Date"] = format_datetime(datetime.now(UTC))
        domain = sender.domain or "localhost"
        email["Message-ID"] = f"<{message.message_id}@{domain}>" if message.message_id else make_msgid(domain=domain)
        # RFC 3834: machine-sent; auto-responders should not answer it.
        email["Auto-Submitted"] = "auto-generated"
        email.set_content(message.text)
        if message.html is not None:
            email.add_alternative(message.html, subtype="html")
        return email

    def _client(self) -> aiosmtplib.SMTP:
        settings = self._settings
        return aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user or None,
            password=settings.smtp_password if settings.smtp_user else None,
            use_tls=settings.smtp_tls == "tls",
            start_tls=settings.smtp_tls == "starttls",
            tls_context=self._tls_context,
            timeout=self._timeout,
        )

    async def send(self, message: Message) -> str:
        try:
            email = self.build(message)
        except (ValueError, TypeError) as exc:  # a malformed address or header: retrying won't help
            raise MailDeliveryError(f"cannot build the email to {message.to!r}: {exc}", refused=True) from exc
        try:
            async with self._client() as client:
                _, answer = await client.send_message(email)
        except _REFUSALS as exc:
            code, text = _first_response(exc)
            raise MailDeliveryError(f"{code} {text}".strip(), refused=True, smtp_code=code) from exc
        except aiosmtplib.SMTPResponseException as exc:  # greeting, EHLO, STARTTLS or AUTH said no
            raise MailDeliveryError(f"{self.server} answered {exc.code} {exc.message}", smtp_code=exc.code) from exc
        except aiosmtplib.SMTPConnectError as exc:
            raise MailDeliveryError(f"could not connect to {self.server}: {exc.__cause__ or exc}") from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise MailDeliveryError(f"{self.server} did not answer in time: {exc}") from exc
        except aiosmtplib.SMTPException as exc:
            raise MailDeliveryError(f"SMTP session with {self.server} failed: {exc}") from exc
        except ssl.SSLError as exc:
            raise MailDeliveryError(f"TLS with {self.server} failed: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise MailDeliveryError(f"could not connect to {self.server}: {exc}") from exc
        except ValueError as exc:  # aiosmtplib refuses addresses it cannot send safely
            raise MailDeliveryError(f"cannot send to {message.to!r}: {exc}", refused=True) from exc
        # DATA succeeds only with 250; aiosmtplib keeps the text (often the queue id).
        return f"250 {answer}".strip()


def _first_response(exc: aiosmtplib.SMTPException) -> tuple[int | None, str]:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        if exc.recipients:
            first = exc.recipients[0]
            return first.code, first.message
        return None, str(exc)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code, exc.message
    return None, str(exc)
