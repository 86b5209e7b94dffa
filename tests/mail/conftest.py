"""A real SMTP server per test (aiosmtpd on a free loopback port), collecting what it accepts."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatehouse.core.config import Settings
from gatehouse.core.embedded import free_port

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


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SMTPServer]]:
    """Start SMTP servers (``port=`` to reuse one, extra aiosmtpd options); all stop at the end."""
    started: list[SMTPServer] = []

    def start(port: int | None = None, **options: Any) -> SMTPServer:
        server = SMTPServer(port or free_port(), **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp(smtp_server: Callable[..., SMTPServer]) -> SMTPServer:
    """A plain SMTP server (no TLS, no login)."""
    return smtp_server()


def smtp_settings(settings: Settings, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "smtp_sender_email": "noreply@gatehouse.test",
        "smtp_sender_name": "Gatehouse Mail",
    }
    values.update(overrides)
    return settings.model_copy(update=values)


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A self-signed certificate for 127.0.0.1, trusted only by the contexts made from it."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TLSFiles(folder / "cert.pem", folder / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def password_authenticator(user: str, password: str) -> Callable[..., AuthResult]:
    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate
