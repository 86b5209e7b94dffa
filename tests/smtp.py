"""A real SMTP server (aiosmtpd on a free loopback port) that collects what it accepts."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller

#: Recipients whose local part starts with this are refused at RCPT, as a server refuses a mailbox.
REFUSED_PREFIX = "refuse"


@dataclass
class Received:
    sender: str
    recipients: list[str]
    email: EmailMessage
    login: str | None


@dataclass
class Collector:
    """The aiosmtpd handler. It runs in the server's thread; the lock guards the list."""

    received: list[Received] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    count: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith(REFUSED_PREFIX):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)  # let concurrent senders interleave
        parsed = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data.login.decode() if session.authenticated else None
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed, login))
            self.count += 1
            number = self.count
        return f"250 2.0.0 Ok: queued as Q{number}"


def smtp_env(port: int) -> dict[str, str]:
    """The settings that send a Gatehouse server's mail to plain SMTP on 127.0.0.1:``port``."""
    return {"GATEHOUSE_SMTP_HOST": "127.0.0.1", "GATEHOUSE_SMTP_PORT": str(port), "GATEHOUSE_SMTP_TLS": "none"}


class SMTPServer:
    def __init__(self, port: int, **options: Any) -> None:
        self.port = port
        self.collector = Collector()
        self._controller = Controller(
            self.collector, hostname="127.0.0.1", port=port, server_hostname="mail.test", **options
        )
        self._controller.start()

    @property
    def received(self) -> list[Received]:
        with self.collector.lock:
            return list(self.collector.received)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None  # type: ignore[assignment]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait (polling, not sleeping a fixed time) until ``count`` messages have arrived."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} messages, got {len(self.received)}")
            await asyncio.sleep(0.01)
        return self.received

    def wait_for_sync(self, count: int, timeout: float = 15.0) -> list[Received]:
        """The same, for synchronous tests (polling the collector)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} messages, got {len(self.received)}")
            time.sleep(0.02)
        return self.received
