"""ID-token checks (auth/oauth/idtoken.py), each with real keys and signatures (joserfc)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from gatehouse.auth.oauth import idtoken

NOW = int(time.time())
ISSUER = "https://idp.example.com"
RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
PUBLISHED = KeySet.import_key_set(KeySet([RSA, EC]).as_dict(private=False))


def claims(**changes: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "aud": "web-client", "sub": "user-1", "iat": NOW, "exp": NOW + 300, "nonce": "n-1"}
    return {k: v for k, v in (base | changes).items() if v is not None}


def sign(payload: dict[str, Any], key: Any = RSA, alg: str = "RS256", kid: str | None = "rsa-1") -> str:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    return jwt.encode(header, payload, key)


def check(token: str, **kwargs: Any) -> dict[str, Any]:
    """Verify at the module's fixed NOW (a long suite must not expire the tokens made at import)."""
    options: dict[str, Any] = {"issuer": ISSUER, "audiences": ("web-client", "ios-client"), "nonce": "n-1",
                               "now": lambda: NOW}
    return idtoken.verify(token, PUBLISHED, **(options | kwargs))


def test_a_good_token_passes_with_rsa_and_ec_keys() -> None:
    assert check(sign(claims()))["sub"] == "user-1"
    assert check(sign(claims(), EC, "ES256", "ec-1"))["sub"] == "user-1"
    assert check(sign(claims(aud="ios-client")))["aud"] == "ios-client"


def test_a_hashed_nonce_is_compared_with_the_hash_of_the_given_one() -> None:
    token = sign(claims(nonce=idtoken.hashed_nonce("raw nonce")))
    assert check(token, nonce="raw nonce", nonce_hashed=True)["sub"] == "user-1"
    with pytest.raises(idtoken.InvalidIDToken, match="nonce"):
        check(token, nonce="another", nonce_hashed=True)


@pytest.mark.parametrize(("token", "options", "reason"), [
    (sign(claims(exp=NOW - 120)), {}, "not valid now"),
    (sign(claims(nbf=NOW + 600)), {}, "not valid now"),
    (sign(claims(iat=None)), {}, "not valid now"),
    (sign(claims(sub=None)), {}, "not valid now"),
    (sign(claims(iss="https://evil.example.com")), {}, "issued by"),
    (sign(claims(aud="someone-else")), {}, "not for this server"),
    (sign(claims(aud=["web-client", "someone-else"])), {}, "azp"),
    (sign(claims(nonce="n-2")), {}, "nonce"),
    (sign(claims(nonce=None)), {}, "nonce"),
    (sign(claims()), {"nonce": None}, "carries a nonce"),
    (sign(claims(), RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})), {}, "signature"),
    (sign(claims(), kid="unknown"), {}, "signature"),
    (sign(claims(), OctKey.import_key("a shared secret that is long enough!"), "HS256", None), {}, "not allowed"),
    ("e30.e30.", {}, "signature"),
    ("not a token", {}, "malformed|signature"),
    ("", {}, "empty"),
    ("a" * 20_000, {}, "too long"),
])
def test_each_failed_check_is_refused_with_its_reason(token: str, options: dict[str, Any], reason: str) -> None:
    with pytest.raises(idtoken.InvalidIDToken, match=reason):
        check(token, **options)


def test_an_unsigned_token_is_refused() -> None:
    import base64
    import json

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    unsigned = f"{part({'alg': 'none'})}.{part(claims())}."
    with pytest.raises(idtoken.InvalidIDToken):
        check(unsigned)


def test_clock_leeway_is_one_minute() -> None:
    assert check(sign(claims(exp=NOW - 30)))["sub"] == "user-1"
    with pytest.raises(idtoken.InvalidIDToken):
        check(sign(claims(exp=NOW - 30)), now=lambda: NOW + 60)


def test_an_issuer_check_function_sees_the_claims() -> None:
    token = sign(claims(iss="https://login.example.com/tenant-7/v2.0", tid="tenant-7"))
    def tenant(iss: str, found: dict[str, Any]) -> bool:
        return iss == f"https://login.example.com/{found.get('tid')}/v2.0"
    assert check(token, issuer=tenant)["tid"] == "tenant-7"
    forged = sign(claims(iss="https://login.example.com/tenant-7/v2.0", tid="tenant-8"))
    with pytest.raises(idtoken.InvalidIDToken, match="issued by"):
        check(forged, issuer=tenant)


def test_header_kid_reads_the_unverified_header() -> None:
    assert idtoken.header_kid(sign(claims())) == "rsa-1"
    assert idtoken.header_kid("garbage") is None
