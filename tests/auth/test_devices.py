"""Device cookies: bound to one account, signed by the server, expiring; anything else is no cookie."""

from __future__ import annotations

import pytest

from gatehouse.auth.devices import LIFETIME, MAX_PER_CLIENT, PREFIX, DeviceCookies
from gatehouse.core.config import load_settings
from gatehouse.core.keys import KeySet

T0 = 1_800_000_000.0
ALICE, MALLORY = "alice@example.com", "mallory@example.com"


@pytest.fixture
def devices(keys: KeySet) -> DeviceCookies:
    return DeviceCookies(keys, load_settings(), now=lambda: T0)


def jar(devices: DeviceCookies, email: str, value: str) -> dict[str, str]:
    return {devices.name(email): value}


def test_a_cookie_is_good_for_its_own_account_only(devices: DeviceCookies) -> None:
    value = devices.value(ALICE)
    nonce = devices.nonce(ALICE, jar(devices, ALICE, value))
    assert nonce is not None and nonce in value
    assert devices.nonce(MALLORY, jar(devices, MALLORY, value)) is None  # another account's cookie
    assert devices.nonce(ALICE, jar(devices, MALLORY, value)) is None  # under another account's name
    assert devices.name(ALICE) != devices.name(MALLORY)
    assert devices.name(ALICE).startswith(PREFIX) and ALICE not in devices.name(ALICE) + value


def test_each_log_in_gets_a_new_nonce(devices: DeviceCookies) -> None:
    assert devices.nonce(ALICE, jar(devices, ALICE, devices.value(ALICE))) != devices.nonce(
        ALICE, jar(devices, ALICE, devices.value(ALICE))
    )


def tampered(value: str) -> list[str]:
    issued, nonce, tag = value.split(".")
    flip = "A" if tag[-1] != "A" else "B"
    return [
        f"{issued}.{nonce}.{tag[:-1]}{flip}",  # tag changed
        f"{int(issued) + 1}.{nonce}.{tag}",  # issue time changed
        f"{issued}.{nonce}x.{tag}",  # nonce changed
        f"{issued}.{nonce}.",  # no tag
        f"{issued}.{nonce}",
        f"{issued}.{nonce}.{tag}.{tag}",
        "",
        "x" * 5000,
        "é.é.é",
        f"-{issued}.{nonce}.{tag}",
        "\0.\0.\0",
        f"\u00b2\u00b3.{nonce}.{tag}",  # digits to str.isdigit, not to int()
    ]


def test_tampered_or_malformed_values_are_no_cookie(devices: DeviceCookies) -> None:
    for value in tampered(devices.value(ALICE)):
        assert devices.nonce(ALICE, jar(devices, ALICE, value)) is None, value


def test_a_cookie_signed_with_another_key_is_no_cookie(devices: DeviceCookies, keys: KeySet) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    other = DeviceCookies(
        KeySet(ec.generate_private_key(ec.SECP256R1()), keys.publishable_key, keys.secret_key, keys.anon_key,
               keys.service_role_key, keys.authenticator_password),
        load_settings(), now=lambda: T0,
    )
    assert other.name(ALICE) != devices.name(ALICE)
    assert devices.nonce(ALICE, jar(devices, ALICE, other.value(ALICE))) is None


@pytest.mark.parametrize(
    ("age", "good"), [(0, True), (LIFETIME, True), (LIFETIME + 1, False), (-60, True), (-3600, False)]
)
def test_cookies_expire_and_cannot_come_from_the_future(devices: DeviceCookies, age: int, good: bool) -> None:
    value = devices.value(ALICE, issued=int(T0 - age))
    assert (devices.nonce(ALICE, jar(devices, ALICE, value)) is not None) is good


@pytest.mark.parametrize(
    ("overrides", "secure"),
    [
        ({"host": "127.0.0.1"}, False),  # development over http
        ({"host": "127.0.0.1", "site_url": "https://app.example.com"}, True),
        ({"host": "0.0.0.0", "site_url": "http://app.example.com"}, True),  # production: always Secure
    ],
)
def test_set_cookie_attributes(keys: KeySet, overrides: dict[str, str], secure: bool) -> None:
    [header] = DeviceCookies(keys, load_settings(**overrides), now=lambda: T0).set_cookies(ALICE, {})
    attributes = header.split("; ")
    assert attributes[0].startswith(PREFIX)
    assert {"Path=/", "HttpOnly", "SameSite=Strict", f"Max-Age={LIFETIME}"} <= set(attributes)
    assert ("Secure" in attributes) is secure


def test_a_client_keeps_a_few_device_cookies_the_newest(keys: KeySet) -> None:
    """A log-in removes the client's oldest device cookies past MAX_PER_CLIENT (junk first), so a
    browser used for many accounts keeps a Cookie header every proxy accepts."""
    clock = [T0]
    devices = DeviceCookies(keys, load_settings(), now=lambda: clock[0])
    browser: dict[str, str] = {"theme": "dark", PREFIX + "junk": "not-a-device-cookie"}
    for n in range(40):
        clock[0] = T0 + n
        for header in devices.set_cookies(f"user{n}@example.com", browser):
            name, value = header.split("; ")[0].split("=", 1)
            if "Max-Age=0" in header:
                del browser[name]
            else:
                browser[name] = value
        assert sum(name.startswith(PREFIX) for name in browser) <= MAX_PER_CLIENT
    assert browser["theme"] == "dark"  # not ours: never touched
    kept = {devices.nonce(f"user{n}@example.com", browser) is not None for n in range(40 - MAX_PER_CLIENT, 40)}
    assert kept == {True}, "the newest accounts keep theirs"
    assert devices.nonce("user0@example.com", browser) is None
    again = devices.set_cookies("user39@example.com", browser)  # the same account again: nothing removed
    assert len(again) == 1
