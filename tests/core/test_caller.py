"""The one resolver of callers: API keys, bearer tokens and the refusals each API renders."""

from __future__ import annotations

import time

import pytest
from starlette.datastructures import Headers

from gatehouse.core.caller import ANONYMOUS, Callers, Unauthenticated
from gatehouse.core.keys import JWTVerifier, KeySet


@pytest.fixture(scope="module")
def callers(keys: KeySet) -> Callers:
    return Callers(keys, JWTVerifier(keys))


def user_token(keys: KeySet, **overrides: object) -> str:
    claims: dict[str, object] = {
        "sub": "00000000-0000-0000-0000-00000000000a", "role": "authenticated", "aud": "authenticated",
        "session_id": "00000000-0000-0000-0000-0000000000b0", "exp": int(time.time()) + 60,
    }
    claims.update(overrides)
    return keys.sign(claims)


def resolve(callers: Callers, headers: dict[str, str], *, key_required: bool = True, token_at_edge: bool = True):  # type: ignore[no-untyped-def]
    return callers.resolve(Headers(headers), key_required=key_required, token_at_edge=token_at_edge)


def test_keys_grant_their_roles(callers: Callers, keys: KeySet) -> None:
    assert callers.key(keys.publishable_key) == ("anon", "publishable")
    assert callers.key(keys.secret_key) == ("service_role", "secret")
    assert callers.key(keys.anon_key) == ("anon", "legacy_anon")
    assert callers.key(keys.service_role_key) == ("service_role", "legacy_service_role")
    assert callers.key("sb_publishable_not-ours") is None
    assert callers.key(user_token(keys)) is None  # a user's token is not an API key
    assert callers.key(None) is None


def test_a_key_alone_makes_a_role_caller(callers: Callers, keys: KeySet) -> None:
    found = resolve(callers, {"apikey": keys.publishable_key})
    assert (found.role, found.key, found.token, found.user_id) == ("anon", "publishable", None, None)
    assert dict(found.claims) == {"role": "anon"}
    secret = resolve(callers, {"authorization": f"Bearer {keys.secret_key}"})  # an sb_ key may come as bearer
    assert secret.role == "service_role" and secret.is_admin


def test_a_user_token_makes_a_signed_in_caller(callers: Callers, keys: KeySet) -> None:
    token = user_token(keys)
    found = resolve(callers, {"apikey": keys.publishable_key, "authorization": f"Bearer {token}"})
    assert found.role == "authenticated" and found.token == token and found.key == "publishable"
    assert found.user_id == "00000000-0000-0000-0000-00000000000a"
    assert found.session_id == "00000000-0000-0000-0000-0000000000b0"
    assert found.signed_in() is found
    with pytest.raises(TypeError):
        found.claims["role"] = "service_role"  # type: ignore[index]  # frozen all the way down


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no_api_key"),
        ({"apikey": "sb_publishable_wrong"}, "invalid_api_key"),
        ({"apikey": "not-a-key"}, "invalid_api_key"),
    ],
)
def test_a_required_key_is_refused_at_the_edge(callers: Callers, headers: dict[str, str], reason: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        resolve(callers, headers)
    assert refused.value.reason == reason and refused.value.status == 401


def test_an_optional_key_waits_for_the_endpoint(callers: Callers) -> None:
    assert resolve(callers, {}, key_required=False) is ANONYMOUS
    found = resolve(callers, {"apikey": "sb_publishable_wrong"}, key_required=False)
    with pytest.raises(Unauthenticated) as refused:
        found.checked()
    assert refused.value.reason == "invalid_api_key"


def test_bad_tokens(callers: Callers, keys: KeySet) -> None:
    expired = user_token(keys, exp=int(time.time()) - 1)
    forged = user_token(keys)[:-4] + "AAAA"
    for token, reason in ((expired, "expired_token"), (forged, "invalid_token"), ("garbage", "invalid_token")):
        headers = {"apikey": keys.publishable_key, "authorization": f"Bearer {token}"}
        with pytest.raises(Unauthenticated) as refused:
            resolve(callers, headers)  # the data API: refused before anything is parsed
        assert refused.value.reason == reason
        waiting = resolve(callers, headers, token_at_edge=False)  # auth and storage: at the endpoint
        assert waiting.role == "anon" and waiting.token is None
        with pytest.raises(Unauthenticated):
            waiting.signed_in()
        with pytest.raises(Unauthenticated):
            waiting.checked()


def test_no_token_where_one_is_needed(callers: Callers, keys: KeySet) -> None:
    with pytest.raises(Unauthenticated) as refused:
        resolve(callers, {"apikey": keys.publishable_key}).signed_in()
    assert refused.value.reason == "no_token"


def test_a_secret_key_from_a_browser_is_refused_wherever_it_travels(callers: Callers, keys: KeySet) -> None:
    browser = {"origin": "https://app.example"}
    for where in ({"apikey": keys.secret_key}, {"authorization": f"Bearer {keys.secret_key}"}):
        with pytest.raises(Unauthenticated) as refused:
            resolve(callers, {**browser, **where}, key_required=False)
        assert refused.value.reason == "secret_key_in_browser"
        assert resolve(callers, where).role == "service_role"  # the same key from a server is fine
    # a made-up secret key from a browser is just an invalid key
    with pytest.raises(Unauthenticated) as refused:
        resolve(callers, {**browser, "apikey": "sb_secret_made-up"})
    assert refused.value.reason == "invalid_api_key"
