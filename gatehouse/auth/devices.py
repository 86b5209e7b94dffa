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
* **At most** ``MAX_PER_CLIENT`` per client: a log-in that adds one removes the client's oldest
  beyond that, so a browser shared by many accounts (or a test client signing in as thousands of
  people) never grows its ``Cookie`` header past what proxies accept (nginx refuses a header line
  over 8 KB, HAProxy a request head over 16 KB, each with a 400).
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

__all__ = ["LIFETIME", "MAX_PER_CLIENT", "PREFIX", "DeviceCookies"]

PREFIX: Final = "gh-device-"
#: Seconds a device cookie is good for (browsers cap cookies at 400 days).
LIFETIME: Final = 365 * 24 * 3600
#: Device cookies one client keeps (about 100 bytes each in its Cookie header).
MAX_PER_CLIENT: Final = 5
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

    def set_cookies(self, email: str, cookies: Mapping[str, str]) -> list[str]:
        """``Set-Cookie`` header values giving this client (whose cookies are ``cookies``) a fresh
        device cookie for ``email`` and removing its oldest others beyond ``MAX_PER_CLIENT``."""
        mine = self.name(email)
        others = sorted(((_issued(value), name) for name, value in cookies.items()
                         if name.startswith(PREFIX) and name != mine), reverse=True)
        dropped = [name for _, name in others[MAX_PER_CLIENT - 1:]]
        return [self._header(mine, self.value(email), LIFETIME)] + [self._header(name, "", 0) for name in dropped]

    def _header(self, name: str, value: str, max_age: int) -> str:
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
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


def _issued(value: str) -> int:
    """When a device cookie was issued (0 for a value that is not one: removed first)."""
    issued = value.split(".", 1)[0]
    return int(issued) if issued.isascii() and issued.isdigit() and len(issued) <= 12 else 0
