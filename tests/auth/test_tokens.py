"""Access tokens read their times from an injected clock, so expiry is tested without sleeping."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from gatehouse.auth.tokens import AccessTokens
from gatehouse.core.config import load_settings
from gatehouse.core.keys import InvalidToken, JWTVerifier, KeySet

T0 = 1_700_000_000.5
USER = {"id": uuid.UUID(int=1), "email": "ada@example.com", "role": "authenticated"}
SESSION = uuid.UUID(int=2)


def tokens(keys: KeySet, now: float, lifetime: int = 3600) -> AccessTokens:
    return AccessTokens(keys, load_settings(jwt_expiry=lifetime), now=lambda: now)


def test_iat_and_exp_come_from_the_clock(keys: KeySet) -> None:
    issued = tokens(keys, T0, lifetime=60).issue(USER, SESSION, amr=[{"method": "password", "timestamp": int(T0)}])
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert (claims["iat"], claims["exp"]) == (int(T0), int(T0) + 60)
    assert (issued.expires_in, issued.expires_at) == (60, int(T0) + 60)
    assert claims["sub"] == str(USER["id"]) and claims["session_id"] == str(SESSION)


def test_a_token_issued_one_lifetime_ago_is_refused(keys: KeySet) -> None:
    now = time.time()
    verifier = JWTVerifier(keys)
    fresh = tokens(keys, now, lifetime=60).issue(USER, SESSION, amr=[]).token
    assert verifier.verify(fresh)["sub"] == str(USER["id"])
    stale = tokens(keys, now - 61, lifetime=60).issue(USER, SESSION, amr=[]).token
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(stale)


def test_the_default_clock_is_the_wall_clock(keys: KeySet) -> None:
    before = int(time.time())
    issued = AccessTokens(keys, load_settings(jwt_expiry=60)).issue(USER, SESSION, amr=[])
    assert before + 60 <= issued.expires_at <= int(time.time()) + 60
