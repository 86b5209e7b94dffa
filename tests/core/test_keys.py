"""Keys are generated once, shared through the data folder or the environment; one verifier guards them."""

from __future__ import annotations

import base64
import json
import stat
import threading
import time
import tracemalloc
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gatehouse.core.config import ConfigError, load_settings
from gatehouse.core.keys import InvalidToken, JWTVerifier, KeySet, load_keys


def user_claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "u1", "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 60} | overrides


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_first_load_generates_a_private_keys_file(tmp_path: Path) -> None:
    keys = load_keys(load_settings(data_dir=tmp_path / "data"))
    path = tmp_path / "data" / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.publishable_key.startswith("sb_publishable_")
    assert keys.secret_key.startswith("sb_secret_")
    assert jwt.decode(keys.anon_key, options={"verify_signature": False})["role"] == "anon"
    assert jwt.decode(keys.service_role_key, options={"verify_signature": False})["role"] == "service_role"


def test_second_load_reuses_the_keys(tmp_path: Path) -> None:
    first = load_keys(load_settings(data_dir=tmp_path))
    second = load_keys(load_settings(data_dir=tmp_path))
    assert (first.publishable_key, first.secret_key, first.kid) == (second.publishable_key, second.secret_key, second.kid)


def test_processes_starting_together_agree_on_one_key_set(tmp_path: Path) -> None:
    results: list[KeySet] = []

    def load() -> None:
        results.append(load_keys(load_settings(data_dir=tmp_path)))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({keys.secret_key for keys in results}) == 1
    assert not list(tmp_path.glob(".keys.*.tmp"))


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = load_settings(
        data_dir=tmp_path,
        jwt_private_key=pem,
        publishable_key="sb_publishable_" + "p" * 20,
        secret_key="sb_secret_" + "s" * 20,
        authenticator_password="x" * 20,
    )
    keys = load_keys(settings)
    assert keys.publishable_key == "sb_publishable_" + "p" * 20
    assert not (tmp_path / "keys.json").exists()  # the legacy JWTs were minted from the given key
    assert JWTVerifier(keys).verify(keys.anon_key)["role"] == "anon"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"jwt_private_key": "not a pem"}, "not a usable PEM"),
        ({"publishable_key": "pk_123"}, "GATEHOUSE_PUBLISHABLE_KEY must start with sb_publishable_"),
        ({"secret_key": "sb_secret_short"}, "GATEHOUSE_SECRET_KEY must start with sb_secret_"),
        ({"authenticator_password": "short"}, "GATEHOUSE_AUTHENTICATOR_PASSWORD"),
    ],
)
def test_bad_keys_from_the_environment_are_clear_errors(tmp_path: Path, override: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_keys(load_settings(data_dir=tmp_path, **override))


def test_rsa_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ConfigError, match="P-256"):
        load_keys(load_settings(data_dir=tmp_path, jwt_private_key=pem))


def test_jwks_publishes_only_the_public_key(keys: KeySet) -> None:
    (jwk,) = keys.jwks()["keys"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256" and jwk["kid"] == keys.kid
    assert "d" not in jwk
    public = jwt.PyJWK(jwk).key
    token = keys.sign(user_claims())
    assert jwt.decode(token, public, algorithms=["ES256"], audience="authenticated")["sub"] == "u1"


def test_api_keys_map_to_roles(keys: KeySet) -> None:
    assert keys.role_for_api_key(keys.publishable_key) == "anon"
    assert keys.role_for_api_key(keys.secret_key) == "service_role"
    assert keys.role_for_api_key(keys.secret_key[:-1]) is None
    assert keys.role_for_api_key("") is None


def test_verifier_accepts_a_good_token(keys: KeySet) -> None:
    claims = JWTVerifier(keys).verify(keys.sign(user_claims()))
    assert claims["sub"] == "u1"


def forged_tokens(keys: KeySet) -> dict[str, str]:
    other = ec.generate_private_key(ec.SECP256R1())
    public_pem = keys.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = keys.sign(user_claims())
    header, _payload, signature = good.split(".")
    hs_signed = jwt.api_jws.PyJWS(algorithms=["HS256"])  # sign HS256 with the public key as secret
    hs_signed._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    return {
        "alg none": b64({"alg": "none", "typ": "JWT"}) + "." + b64(user_claims()) + ".",
        "wrong key": jwt.encode(user_claims(), other, algorithm="ES256", headers={"kid": keys.kid}),
        "unknown kid": jwt.encode(user_claims(), keys.private_key, algorithm="ES256", headers={"kid": "other"}),
        "HS256 with the public key": hs_signed.encode(
            json.dumps(user_claims()).encode(), public_pem, algorithm="HS256"
        ),
        "expired": keys.sign(user_claims(exp=int(time.time()) - 10)),
        "no exp": keys.sign({k: v for k, v in user_claims().items() if k != "exp"}),
        "tampered payload": f"{header}.{b64(user_claims(role='service_role'))}.{signature}",
        "wrong audience": keys.sign(user_claims(aud="someone-else")),
        "role not a string": keys.sign(user_claims(role=["service_role"])),
        "garbage": "not.a.jwt",
        "empty": "",
    }


@pytest.mark.parametrize(
    "case",
    ["alg none", "wrong key", "unknown kid", "HS256 with the public key", "expired", "no exp",
     "tampered payload", "wrong audience", "role not a string", "garbage", "empty"],
)
def test_verifier_refuses_forged_tokens(keys: KeySet, case: str) -> None:
    with pytest.raises(InvalidToken):
        JWTVerifier(keys).verify(forged_tokens(keys)[case])


def test_expired_token_says_so(keys: KeySet) -> None:
    with pytest.raises(InvalidToken, match="expired"):
        JWTVerifier(keys).verify(keys.sign(user_claims(exp=int(time.time()) - 1)))


def test_verified_tokens_are_remembered_but_still_expire(keys: KeySet, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = JWTVerifier(keys, cache_size=2)
    token = keys.sign(user_claims(exp=int(time.time()) + 30))
    calls = 0
    original = verifier._verify

    def counting(value: str) -> dict[str, object]:
        nonlocal calls
        calls += 1
        return original(value)

    monkeypatch.setattr(verifier, "_verify", counting)
    first = verifier.verify(token)
    first["role"] = "service_role"  # callers get copies: nothing they do reaches the cache
    assert verifier.verify(token)["role"] == "authenticated"
    assert calls == 1
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)  # after exp: not served from the cache
    verifier.verify(token)
    assert calls == 2


def test_remembered_tokens_are_bounded_and_kept_small(keys: KeySet) -> None:
    verifier = JWTVerifier(keys, cache_size=3)
    metadata = {"full_name": "x" * 20_000}  # a big token: 27 KB, its claims' JSON 20 KB
    tokens = [keys.sign(user_claims(sub=f"u{i}", user_metadata=metadata)) for i in range(5)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for token in tokens:
            verifier.verify(token.encode().decode())  # a new string, as each request's header gives it
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(verifier._cache) == 3
    # Each entry is about its claims' JSON: not the token too, nor a parsed copy of the claims.
    assert held < 3 * 1.2 * len(json.dumps(user_claims(sub="u0", user_metadata=metadata)))
    assert verifier.verify(tokens[-1])["user_metadata"] == metadata
    assert JWTVerifier(keys, cache_size=0).verify(tokens[0])["sub"] == "u0"


def test_signed_tokens_are_what_pyjwt_reads(tmp_path: Path) -> None:
    """``KeySet.sign`` writes the JWS itself: PyJWT (and so every JWT library) must read it alike."""
    keys = load_keys(load_settings(data_dir=tmp_path))
    claims = user_claims(user_metadata={"full_name": "Zoë 名前 \u2028", "nested": {"list": [1, 2.5, None, True]}})
    token = keys.sign(claims)
    public = keys.private_key.public_key()
    assert jwt.decode(token, public, algorithms=["ES256"], audience="authenticated") == claims
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": keys.kid, "typ": "JWT"}
    header, payload, signature = token.split(".")
    assert "=" not in token and len(base64.urlsafe_b64decode(signature + "==")) == 64  # raw r || s, not DER
    tampered = f"{header}.{payload[:-2]}AA.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tampered, public, algorithms=["ES256"], audience="authenticated")
