"""Device cookies: OWASP's "Slow down online guessing attacks with device cookies".

A client that logs in to an account with the right password gets a cookie that binds the
account's login name to a random nonce, signed with a key only the server has. When that client
logs in again, the cookie shows it has done so before: the log-in throttle
(``gatehouse.auth.throttle``) lets it past the account's slow-down, so an attacker who burns an
account's failure budget cannot lock its owner out of a browser they already use. The cookie's
own failed attempts are counted per nonce, and a cookie that fails too often stops being trusted
(a stolen cookie buys a few guesses, not a bypass).

* **Name** ``gh-device-<HMAC(key, "name", email)[:16] as hex>``: one cookie per account, so a
  browser used for several accounts keeps one for each, and the server finds the one for the
  address being tried without the cookie naming the address.
* **Value** ``<issued>.<nonce>.<HMAC(key, "value", email, issued, nonce)>``: the tag binds the
  cookie to the login name (a cookie of one account is worth nothing for another), to its nonce
  (the counter key) and to its issue time (it expires after ``LIFETIME`` even if a client keeps
  it longer). Tags are compared in constant time.
* **Attributes** ``Path=/`` (the web app's ``/login`` and ``/auth/v1/token`` share it),
  ``HttpOnly``, ``SameSite=Strict`` (only same-site requests carry it; supabase-js on another
  origin never sends it, which only means it gets no bypass), ``Secure`` except in development
  over plain http.

The key is derived from the signing key (as refresh-token successors are), so every process
sharing the keys accepts every other's cookies, and rotating the signing key retires them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Final

from gatehouse.core.config import Settings
from gatehouse.core.keys import KeySet

__all__ = ["LIFETIME", "PREFIX", "DeviceCookies"]

PREFIX: Final = "gh-device-"
#: Seconds a device cookie is good for (browsers cap cookies at 400 days).
LIFETIME: Final = 365 * 24 * 3600
#: Longer values are not ours: refused before any work.
_MAX_VALUE: Final = 128


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DeviceCookies:
    """Issues and checks device cookies. ``now`` (seconds since the epoch) is injectable for tests."""

    def __init__(self, keys: KeySet, settings: Settings, *, now: Callable[[], float] = time.time) -> None:
        self._key = keys.derive(b"gatehouse device cookie")
        self._now = now
        self.secure = settings.environment != "development" or settings.public_site_url.startswith("https://")

    def _mac(self, *parts: str) -> bytes:
        message = b"\0".join(part.encode("utf-8", "surrogatepass") for part in parts)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def name(self, email: str) -> str:
        """The cookie name for an account (its normalised email)."""
        return PREFIX + self._mac("name", email)[:16].hex()

    def value(self, email: str, *, issued: int | None = None, nonce: str | None = None) -> str:
        """A new cookie value for ``email``."""
        issued = int(self._now()) if issued is None else issued
        nonce = nonce or secrets.token_urlsafe(16)
        return f"{issued}.{nonce}.{_b64(self._mac('value', email, str(issued), nonce))}"

    def set_cookie(self, email: str) -> str:
        """A ``Set-Cookie`` header value giving this client a fresh device cookie for ``email``."""
        parts = [f"{self.name(email)}={self.value(email)}", "Path=/", f"Max-Age={LIFETIME}", "HttpOnly",
                 "SameSite=Strict"]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)

    def nonce(self, email: str, cookies: Mapping[str, str]) -> str | None:
        """The nonce of this client's valid, unexpired device cookie for ``email``, or None."""
        value = cookies.get(self.name(email), "")
        if not value or len(value) > _MAX_VALUE or value.count(".") != 2:
            return None
        issued, nonce, tag = value.split(".")
        if not (issued.isascii() and issued.isdigit()) or len(issued) > 12 or not nonce:
            return None
        expected = _b64(self._mac("value", email, issued, nonce))
        if not hmac.compare_digest(tag.encode(), expected.encode()):
            return None
        age = self._now() - int(issued)
        if age < -300 or age > LIFETIME:  # from the future (beyond clock skew) or too old
            return None
        return nonce
