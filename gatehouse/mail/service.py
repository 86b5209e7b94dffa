"""Mail operations for the command line: ``gatehouse mail test you@example.com``."""

from __future__ import annotations

import ssl

from gatehouse.core.config import Settings
from gatehouse.mail.base import MailDeliveryError
from gatehouse.mail.render import Templates
from gatehouse.mail.smtp import SMTPMailer


async def send_test_message(settings: Settings, to: str, *, tls_context: ssl.SSLContext | None = None) -> str:
    """Send the ``test`` template to ``to`` straight over SMTP; return the server's answer.

    It bypasses the outbox on purpose: the point is to see, now, what the SMTP server says.
    Raises MailDeliveryError saying what went wrong (not configured, unreachable, refused).
    """
    if not settings.smtp_host:
        raise MailDeliveryError(
            "SMTP is not configured: set GATEHOUSE_SMTP_HOST (and GATEHOUSE_SMTP_PORT, GATEHOUSE_SMTP_USER, "
            "GATEHOUSE_SMTP_PASSWORD, GATEHOUSE_SMTP_TLS as your provider says)"
        )
    message = Templates(settings).message("test", to)
    return await SMTPMailer(settings, tls_context=tls_context).send(message)
