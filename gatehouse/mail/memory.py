"""The shipped fake mailer: keeps what it is given, and fails on request."""

from __future__ import annotations

from gatehouse.mail.base import MailDeliveryError, Message


class MemoryMailer:
    """Stores sent messages in ``sent``. ``fail(n)`` makes the next n sends fail.

    The failures are unreachable-server errors by default, as an outage looks; pass
    ``refused=True`` to have the server refuse the message instead.
    """

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.attempts = 0
        self._failures = 0
        self._refused = False

    def fail(self, times: int = 1, *, refused: bool = False) -> None:
        self._failures = times
        self._refused = refused

    async def send(self, message: Message) -> str:
        self.attempts += 1
        if self._failures > 0:
            self._failures -= 1
            if self._refused:
                raise MailDeliveryError("550 5.1.1 mailbox unavailable (memory mailer)", refused=True, smtp_code=550)
            raise MailDeliveryError("could not connect to the SMTP server (memory mailer)")
        self.sent.append(message)
        return f"250 OK queued as memory-{len(self.sent)}"

    def to(self, address: str) -> list[Message]:
        """The messages sent to one address, oldest first."""
        return [message for message in self.sent if message.to == address]
