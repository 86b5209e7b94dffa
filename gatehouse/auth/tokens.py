"""Token material: access JWTs, refresh tokens, one-time codes, PKCE.

Nothing here touches the database. Every secret the server keeps is a hash:

* **One-time tokens.** An email carries a 6-digit code and a link whose ``token_hash`` is a
  random 128-bit value of its own (32 hex digits). GoTrue derives the link from the code
  (``SHA-224(email + code)``), which makes the link as guessable as the code and escapes the
  limits on typed codes; here the two are unrelated. The table stores ``SHA-256`` of the link
  token and a salted ``SHA-256`` of the code: reading the table gives no working link, and the
  code's hash is never compared with a link.
* **Refresh tokens.** Opaque random strings; the table stores their SHA-256. A token's
  successor is ``HMAC(secret, token)``, so a client that retries a refresh within the reuse
  interval gets the same successor back although the server never stored it.
* **PKCE auth codes** are random and stored as SHA-256 too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gatehouse.core.config import Settings
from gatehouse.core.keys import KeySet

PKCE_PREFIX = "pkce_"


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_otp() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def new_link_token() -> str:
    """The secret in an email link: 128 random bits, unrelated to the code mailed beside it."""
    return secrets.token_hex(16)


def code_hash(address: str, otp: str) -> str:
    """What the table keeps for a code: bound to the address it was mailed to and to its purpose."""
    return sha256_hex(f"gatehouse email code\x00{address}\x00{otp}")


def stored_hash(link_token: str) -> str:
    """What the table keeps for a link token (with or without the ``pkce_`` prefix)."""
    return sha256_hex(link_token.removeprefix(PKCE_PREFIX))


def verify_pkce(challenge: str, method: str, verifier: str) -> bool:
    if method == "plain":
        return hmac.compare_digest(challenge, verifier)
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(challenge, digest)


class RefreshTokens:
    """Makes refresh tokens and derives each one's successor."""

    def __init__(self, keys: KeySet) -> None:
        self._secret = keys.derive(b"gatehouse refresh-token successor")

    @staticmethod
    def new() -> str:
        return secrets.token_urlsafe(32)

    def successor(self, token: str) -> str:
        digest = hmac.new(self._secret, token.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int
    expires_at: int
    claims: dict[str, Any]


class AccessTokens:
    """Issues access JWTs with the claims Supabase puts in them.

    ``now`` is the clock (seconds since the epoch) that ``iat`` and ``exp`` are read from: tests pass
    a fixed or past one to get a token that has already expired, rather than sleeping one out.
    """

    def __init__(self, keys: KeySet, settings: Settings, *, now: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._issuer = settings.jwt_issuer
        self._lifetime = settings.jwt_expiry
        self._now = now

    def issue(
        self,
        user: dict[str, Any],
        session_id: uuid.UUID,
        *,
        amr: list[dict[str, Any]],
        aal: str = "aal1",
    ) -> AccessToken:
        issued = int(self._now())
        claims = self.claims(user, session_id, amr=amr, aal=aal, issued=issued)
        return AccessToken(self._keys.sign(claims), self._lifetime, claims["exp"], claims)

    def claims(
        self, user: dict[str, Any], session_id: uuid.UUID | None, *, amr: list[dict[str, Any]], aal: str = "aal1",
        issued: int | None = None,
    ) -> dict[str, Any]:
        """The claims an access token for ``user`` carries. Without ``session_id`` (the dashboard's
        "view as", which runs a query as the user and signs nothing) the claim is left out, so no
        session check applies."""
        issued = int(self._now()) if issued is None else issued
        expires = issued + self._lifetime
        claims = {
            "iss": self._issuer,
            "sub": str(user["id"]),
            "aud": "authenticated",
            "exp": expires,
            "iat": issued,
            "email": user.get("email") or "",
            "phone": user.get("phone") or "",
            "app_metadata": user.get("app_metadata") or {},
            "user_metadata": user.get("user_metadata") or {},
            "role": user.get("role") or "authenticated",
            "aal": aal,
            "amr": amr,
            "session_id": str(session_id),
            "is_anonymous": bool(user.get("is_anonymous")),
        }
        if session_id is None:
            del claims["session_id"]
        return claims
