"""The signing keyring in PostgreSQL, in-process: standby, switch, retire; what signs, what is
published and what is accepted after each step; every process following; the root's derived
secrets untouched; races and forged tokens refused."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gatehouse.core.config import load_settings
from gatehouse.core.db import Database
from gatehouse.core.keyring import RELOAD_MARGIN, Keyring, KeyringError
from gatehouse.core.keys import InvalidToken, JWTVerifier, KeySet, SigningKey, load_keys

LIFE = 3600


def claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "u1", "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 600, **extra}


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


@pytest.fixture
async def ring(db: Database, database_url: str, keys_dir: Path) -> AsyncIterator[Callable[[], Keyring]]:
    """``ring()``: a key set and keyring of their own (as another process would have), on an
    empty keyring table; the table is emptied again afterwards."""
    made: list[Keyring] = []

    def make() -> Keyring:
        keyring = Keyring(load_keys(load_settings(data_dir=keys_dir)), lambda: db.admin, longest_token_life=LIFE)
        made.append(keyring)
        return keyring

    await db.admin.execute("DELETE FROM gatehouse.signing_keys")
    yield make
    for keyring in made:
        await keyring.stop()
    await db.admin.execute("DELETE FROM gatehouse.signing_keys")


def keys_of(keyring: Keyring) -> KeySet:
    return keyring._keys


async def test_an_install_that_never_rotates_signs_and_publishes_the_root_key(ring: Callable[[], Keyring]) -> None:
    keyring = ring()
    await keyring.load()
    keys = keys_of(keyring)
    assert [key["kid"] for key in keys.jwks()["keys"]] == [keys.kid]
    assert kid_of(keys.sign(claims())) == keys.kid
    (record,) = await keyring.records()
    assert (record.kid, record.state, record.root) == (keys.kid, "current", True)


async def test_a_rotation_keeps_old_tokens_until_retired_and_never_changes_derived_secrets(
    ring: Callable[[], Keyring], db: Database,
) -> None:
    keyring = ring()
    keys = keys_of(keyring)
    verifier = JWTVerifier(keys)
    derived = keys.derive(b"gatehouse mfa secrets v1")
    old_token = keys.sign(claims())
    unkeyed = jwt.encode(claims(), keys.private_key, algorithm="ES256")  # a hand-made token without a kid
    assert verifier.verify(old_token)["sub"] == verifier.verify(unkeyed)["sub"] == "u1"

    standby = await keyring.create_standby()
    assert [key["kid"] for key in keys.jwks()["keys"]] == [keys.kid, standby.kid]
    assert kid_of(keys.sign(claims())) == keys.kid  # published, not signing yet
    with pytest.raises(KeyringError) as twice:
        await keyring.create_standby()
    assert twice.value.code == "standby_exists"

    new, old = await keyring.switch()
    assert (new.kid, new.state, old.kid, old.state) == (standby.kid, "current", keys.kid, "previous")
    new_token = keys.sign(claims())
    assert kid_of(new_token) == standby.kid
    assert {key["kid"] for key in keys.jwks()["keys"]} == {keys.kid, standby.kid}
    assert verifier.verify(old_token) and verifier.verify(new_token) and verifier.verify(unkeyed)
    with pytest.raises(KeyringError) as none_left:
        await keyring.switch()
    assert none_left.value.code == "no_standby_key"

    with pytest.raises(KeyringError) as early:
        await keyring.retire(keys.kid)
    assert early.value.code == "still_valid" and early.value.status == 409
    previous = next(r for r in await keyring.records() if r.state == "previous")
    assert previous.retire_after is not None and previous.deactivated_at is not None
    assert (previous.retire_after - previous.deactivated_at).total_seconds() == LIFE + RELOAD_MARGIN
    with pytest.raises(KeyringError) as not_previous:
        await keyring.retire(standby.kid)
    assert not_previous.value.code == "not_previous"

    await db.admin.execute("UPDATE gatehouse.signing_keys SET deactivated_at = now() - make_interval(secs => $1) "
                           "WHERE kid = $2", float(LIFE + RELOAD_MARGIN + 1), keys.kid)
    retired = await keyring.retire(keys.kid)
    assert retired.state == "retired"
    assert [key["kid"] for key in keys.jwks()["keys"]] == [standby.kid]
    for refused in (old_token, unkeyed):  # the old token was remembered by the cache: forgotten now
        with pytest.raises(InvalidToken, match="unknown key|Signature"):
            verifier.verify(refused)
    assert verifier.verify(new_token)["sub"] == "u1"
    assert keys.derive(b"gatehouse mfa secrets v1") == derived
    with pytest.raises(KeyringError):
        await keyring.retire(keys.kid)  # once only


async def test_forged_tokens_are_refused_whatever_kid_they_name(ring: Callable[[], Keyring]) -> None:
    keyring = ring()
    keys = keys_of(keyring)
    await keyring.create_standby()
    verifier = JWTVerifier(keys)
    stranger = ec.generate_private_key(ec.SECP256R1())
    standby_kid = keys.jwks()["keys"][1]["kid"]
    forged = {
        "unknown kid": jwt.encode(claims(), stranger, algorithm="ES256", headers={"kid": "x" * 43}),
        "a published kid, another key": jwt.encode(claims(), stranger, algorithm="ES256",
                                                   headers={"kid": standby_kid}),
        "no kid, another key": jwt.encode(claims(), stranger, algorithm="ES256"),
        "kid not a string": b64({"alg": "ES256", "kid": 7}) + keys.sign(claims())[keys.sign(claims()).index("."):],
    }
    for name, token in forged.items():
        with pytest.raises(InvalidToken):
            verifier.verify(token)
            pytest.fail(name)


async def test_every_process_follows_a_change_made_by_another(ring: Callable[[], Keyring]) -> None:
    a, b = ring(), ring()
    await b.start()
    before = keys_of(b).jwks()["keys"]
    standby = await a.create_standby()
    await _until(lambda: len(keys_of(b).jwks()["keys"]) == 2)
    await a.switch()
    await _until(lambda: keys_of(b).ring.current.kid == standby.kid)
    verifier = JWTVerifier(keys_of(b))
    assert kid_of(keys_of(b).sign(claims())) == standby.kid
    assert verifier.verify(keys_of(a).sign(claims())) and verifier.verify(SigningKey.of(keys_of(b).private_key)
                                                                           .sign(claims()))
    assert before[0]["kid"] == keys_of(b).kid


async def test_two_switches_at_once_leave_exactly_one_current_key(ring: Callable[[], Keyring], db: Database) -> None:
    a, b = ring(), ring()
    await a.create_standby()
    results = await asyncio.gather(a.switch(), b.switch(), return_exceptions=True)
    assert sorted(type(result).__name__ for result in results) == ["KeyringError", "tuple"]
    states = [row["state"] for row in await db.admin.fetch("SELECT state FROM gatehouse.signing_keys")]
    assert sorted(states) == ["current", "previous"]
    assert not any(isinstance(result, asyncpg.PostgresError) for result in results)


async def test_keys_sealed_under_another_root_are_ignored(ring: Callable[[], Keyring], db: Database,
                                                         tmp_path: Path) -> None:
    keyring = ring()
    await keyring.create_standby()
    await keyring.switch()
    other = Keyring(load_keys(load_settings(data_dir=tmp_path)), lambda: db.admin, longest_token_life=LIFE)
    await other.load()
    assert [key["kid"] for key in keys_of(other).jwks()["keys"]] == [keys_of(other).kid]  # its own ring: empty
    sealed = await db.admin.fetchrow("SELECT kid, sealed_private_key FROM gatehouse.signing_keys WHERE NOT root")
    assert sealed is not None and other._unseal(sealed) is None


async def _until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the other process did not follow"
        await asyncio.sleep(0.05)
