"""OpenID Connect ID tokens: verified with joserfc against the issuer's published keys.

An ID token says who signed in at the provider. It is trusted only when every check holds: the
signature, by a key from the issuer's JWKS and an asymmetric algorithm (``none`` and the HMAC
algorithms, signed with a secret the client shares, are refused); the issuer; the audience (one
of the configured client ids); the expiry, not-before and issued-at times (a minute of leeway for
clocks); a subject; and the nonce that ties the token to the sign-in that asked for it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Collection
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

#: What a provider may sign ID tokens with: public-key algorithms only.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY = 60
#: Longest ID token accepted, in characters: a few KB in practice.
MAX_LENGTH = 16_384


class InvalidIDToken(Exception):
    """The ID token failed a check; the message says which, for the log and the client."""


def header_kid(token: str) -> str | None:
    """The ``kid`` of a compact JWS, unverified: which key to look for before verifying."""
    try:
        kid = jws.extract_compact(token.encode()).protected.get("kid")
        return kid if isinstance(kid, str) else None
    except (JoseError, ValueError, TypeError):
        return None


def hashed_nonce(nonce: str) -> str:
    """The SHA-256 (hex) of a nonce, as native sign-in SDKs put it in the ID token."""
    return hashlib.sha256(nonce.encode()).hexdigest()


def verify(
    token: str,
    keys: KeySet,
    *,
    issuer: str | Callable[[str, dict[str, Any]], bool],
    audiences: Collection[str],
    nonce: str | None,
    nonce_hashed: bool = False,
    now: Callable[[], int] = lambda: int(time.time()),
) -> dict[str, Any]:
    """The claims of ``token`` if it passes every check; raises InvalidIDToken.

    ``issuer`` is the exact issuer, or a check of (iss, claims) for providers whose tokens name a
    tenant (Microsoft's ``common`` endpoint). ``nonce``: the value the sign-in sent; with
    ``nonce_hashed`` the token carries its SHA-256 instead (native SDKs). None: the token must
    carry no nonce either.
    """
    if not token or len(token) > MAX_LENGTH:
        raise InvalidIDToken("the ID token is empty or too long")
    try:
        decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
    except JoseError as exc:
        raise InvalidIDToken(f"the ID token's signature does not verify: {exc.description or exc.error}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidIDToken(f"the ID token is malformed: {exc}") from None
    claims = dict(decoded.claims)
    registry = JWTClaimsRegistry(
        now=now, leeway=LEEWAY, sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise InvalidIDToken(f"the ID token is not valid now: {exc.description or exc.error}") from None
    iss = claims.get("iss")
    if not isinstance(iss, str) or not (issuer(iss, claims) if callable(issuer) else iss == issuer):
        raise InvalidIDToken(f"the ID token was issued by {iss!r}, not by this provider")
    aud = claims.get("aud")
    named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in audiences for a in named):
        raise InvalidIDToken(f"the ID token is for {aud!r}, not for this server's client id")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") not in audiences:
        raise InvalidIDToken("the ID token names several audiences and its azp is not this server's client id")
    given = claims.get("nonce")
    if nonce is None:
        if given is not None:
            raise InvalidIDToken("the ID token carries a nonce but none was sent with it")
    else:
        expected = hashed_nonce(nonce) if nonce_hashed else nonce
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
            raise InvalidIDToken("the ID token's nonce does not match the one sent with this sign-in")
    return claims


__all__ = ["ALGORITHMS", "InvalidIDToken", "hashed_nonce", "header_kid", "verify"]
