"""TOTP factors (RFC 6238): new secrets, their otpauth:// URI and QR code, checking a code once,
and the secrets' encryption at rest.

Codes are six digits over 30-second steps, SHA-1 (what every authenticator app reads from an
``otpauth://`` URI), accepted one step either side for clocks. A code is accepted once: the step
it matched is stored, and a code for that step or an earlier one is refused afterwards, so a
code seen over a shoulder or in a log cannot be used again.
"""

from __future__ import annotations

import base64
import hmac
import io
import os
import secrets
import time
import uuid
from collections.abc import Callable

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gatehouse.core.keys import KeySet

STEP_SECONDS = 30
DIGITS = 6
#: Steps either side of now whose code is accepted (clock drift between phone and server).
WINDOW = 1


def new_secret() -> str:
    """160 random bits, base32: what authenticator apps expect."""
    return pyotp.random_base32(32)


def uri(secret: str, *, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(text: str) -> str:
    """An SVG document of the QR code (with its namespace: clients show it as a ``data:`` URI)."""
    out = io.BytesIO()
    segno.make(text, error="h").save(out, kind="svg", xmldecl=False, svgns=True, scale=4, border=2)
    return out.getvalue().decode()


def matching_step(secret: str, code: str, *, now: Callable[[], float] = time.time) -> int | None:
    """The time step whose code ``code`` is (within the window), or None."""
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int(now()) // STEP_SECONDS
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            found = step  # no early return: the same work whichever step matches
    return found


RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed by hand


def new_recovery_codes(count: int = 10) -> list[str]:
    """``count`` codes of 10 characters (about 49 bits each), shown as ``xxxxx-xxxxx``."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalize_recovery_code(code: str) -> str:
    """What a person typed, as stored: lower case, no spaces or dashes."""
    return "".join(ch for ch in code.lower() if ch.isalnum())


class SecretBox:
    """Encrypts factor secrets with AES-GCM under a key derived from the signing key; the factor's
    id is the associated data, so a secret copied onto another factor's row does not decrypt."""

    PREFIX = "v1:"

    def __init__(self, keys: KeySet) -> None:
        self._aead = AESGCM(keys.derive(b"gatehouse mfa secrets v1"))
        self._code_key = keys.derive(b"gatehouse mfa recovery codes v1")

    def seal(self, factor_id: uuid.UUID, secret: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), factor_id.bytes)
        return self.PREFIX + base64.b64encode(nonce + sealed).decode()

    def code_hash(self, user_id: uuid.UUID, code: str) -> str:
        """A recovery code as stored: an HMAC under a key of its own, tied to its user."""
        return hmac.new(self._code_key, user_id.bytes + normalize_recovery_code(code).encode(), "sha256").hexdigest()

    def open(self, factor_id: uuid.UUID, stored: str) -> str:
        if not stored.startswith(self.PREFIX):
            raise ValueError("not a sealed secret")
        raw = base64.b64decode(stored[len(self.PREFIX):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], factor_id.bytes).decode()
        except InvalidTag:
            raise ValueError("the secret does not decrypt with this server's key") from None


__all__ = [
    "DIGITS", "STEP_SECONDS", "WINDOW", "SecretBox", "matching_step", "new_recovery_codes", "new_secret",
    "normalize_recovery_code", "qr_svg", "uri",
]
