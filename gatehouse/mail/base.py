"""What every mailer speaks: a ``Message`` in, the server's answer out, ``MailDeliveryError`` on failure.

Two mailers ship: ``SMTPMailer`` (the real one) and ``MemoryMailer`` (the fake for tests). The
outbox only knows this interface, so the retry rules are tested without a network.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from gatehouse.core.errors import GatehouseError


@dataclass(frozen=True, slots=True)
class Message:
    """One email to one address, already rendered."""

    to: str
    subject: str
    text: str
    html: str | None = None
    kind: str = "message"
    user_id: uuid.UUID | None = None
    #: A stable id the mailer turns into the Message-ID header. The outbox sets it, so every
    #: retry of a message carries the same Message-ID and a receiver can drop a duplicate.
    message_id: str | None = None


class MailDeliveryError(GatehouseError):
    """The message was not delivered; the message says what the server (or the network) said.

    ``refused`` tells the outbox whom to blame. True: the server answered and refused this
    message (a bad recipient, a rejected body); such attempts count towards giving the message
    up. False: the server could not be used at all (unreachable, timeout, TLS, login), so the
    message waits, however long the outage lasts.
    """

    def __init__(self, message: str, *, refused: bool = False, smtp_code: int | None = None) -> None:
        super().__init__("mail_delivery_failed", message, status=502)
        self.refused = refused
        self.smtp_code = smtp_code


class Mailer(Protocol):
    async def send(self, message: Message) -> str:
        """Deliver one message; return the server's answer (e.g. ``250 OK queued as 1234``).

        Raises MailDeliveryError, and nothing else, when the message was not accepted.
        """
        ...
