"""Signing in with an OpenID Connect provider: a real one (node-oidc-provider) on loopback.

Gatehouse knows it as ``keycloak`` (the upstream server's generic OIDC name, the one supabase-py
accepts). Each test drives the browser's side with ``ProviderBrowser``: Gatehouse's /authorize,
the provider's log-in and consent pages, Gatehouse's /callback, and back to ``redirect_to``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from gatehouse.core.embedded import free_port
from tests.auth import oidc_provider
from tests.auth.helpers import PASSWORD, Auth, new_email
from tests.auth.oidc_provider import OIDCProvider, ProviderBrowser
from tests.support import RunningServer, run_sql

SECRET = "a-client-secret-of-the-test-provider-0123456789"
OTHER_SECRET = "another-client-secret-of-the-test-provider-0123"
APP = "https://app.example.com"


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def provider(ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    callbacks = [f"http://127.0.0.1:{port}/auth/v1/callback" for port in ports]
    started = oidc_provider.start([
        oidc_provider.Client("gatehouse", SECRET, callbacks),
        # a second app registered at the same provider: its ID tokens are not for Gatehouse
        oidc_provider.Client("another-app", OTHER_SECRET, ["http://127.0.0.1:9/callback"]),
    ], tmp_path_factory.mktemp("oidc") / "provider.log")
    yield started
    started.stop()


def provider_env(provider: OIDCProvider, **extra: str) -> dict[str, str]:
    return {
        "GATEHOUSE_OAUTH_KEYCLOAK_CLIENT_ID": "gatehouse",
        "GATEHOUSE_OAUTH_KEYCLOAK_CLIENT_SECRET": SECRET,
        "GATEHOUSE_OAUTH_KEYCLOAK_ISSUER": provider.issuer,
        "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
        "GATEHOUSE_REDIRECT_ALLOW_LIST": f"{APP}/**",
        **extra,
    }


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], provider: OIDCProvider, ports: tuple[int, int]) -> RunningServer:
    return server_factory(env=provider_env(provider), port=ports[0])


@pytest.fixture(scope="module")
def linking(server_factory: Callable[..., RunningServer], provider: OIDCProvider, ports: tuple[int, int]) -> RunningServer:
    """A second Gatehouse on the same database, with manual linking and anonymous sign-ins on."""
    return server_factory(env=provider_env(provider, GATEHOUSE_MANUAL_LINKING="true", GATEHOUSE_ANONYMOUS_SIGN_INS="true"),
                          port=ports[1])


@pytest.fixture
def browser(server: RunningServer, provider: OIDCProvider) -> Iterator[ProviderBrowser]:
    found = ProviderBrowser(provider, gatehouse=server.url)
    yield found
    found.close()


@pytest.fixture
def auth(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server)
    yield client
    client.close()


def authorize_url(server: RunningServer, **params: str) -> str:
    return f"{server.url}/auth/v1/authorize?" + urlencode({"provider": "keycloak", **params})


def fragment(url: httpx.URL) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(url.fragment).items()}


def query(url: httpx.URL) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(url.query.decode()).items()}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def user_of(auth: Auth, access_token: str) -> dict[str, Any]:
    response = auth.get("/user", token=access_token)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# -- the redirect flow -------------------------------------------------------------------------


def test_settings_name_the_enabled_provider(auth: Auth) -> None:
    external = auth.get("/settings").json()["external"]
    assert external["keycloak"] is True and external["email"] is True
    assert "github" not in external


def test_authorize_needs_no_api_key_and_sends_the_browser_to_the_provider(
    server: RunningServer, provider: OIDCProvider
) -> None:
    response = httpx.get(authorize_url(server, redirect_to=f"{APP}/welcome"), follow_redirects=False)
    assert response.status_code == 302
    location = httpx.URL(response.headers["location"])
    assert str(location).startswith(f"{provider.issuer}/auth?")
    sent = query(location)
    assert sent["client_id"] == "gatehouse"
    assert sent["redirect_uri"] == f"{server.url}/auth/v1/callback"
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert len(sent["state"]) >= 43 and len(sent["nonce"]) >= 32
    assert set(sent["scope"].split()) == {"openid", "email", "profile"}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("gh-oauth-binding=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/auth/v1/callback" in cookie


@pytest.mark.parametrize(("params", "message"), [
    ({}, "Unsupported provider"),
    ({"provider": "nonesuch"}, "Unsupported provider"),
    ({"provider": "keycloak", "code_challenge": "x", "code_challenge_method": "sha1"}, "code_challenge_method"),
    ({"provider": "keycloak", "code_challenge": "x" * 200}, "code_challenge"),
    ({"provider": "keycloak", **{f"p{i}": "v" for i in range(20)}}, "extra query parameters"),
])
def test_authorize_refuses_bad_requests_in_the_auth_shape(
    server: RunningServer, params: dict[str, str], message: str
) -> None:
    response = httpx.get(f"{server.url}/auth/v1/authorize", params=params, follow_redirects=False)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "validation_failed" and message in body["msg"]


def test_extra_query_params_reach_the_provider_but_not_the_reserved_ones(server: RunningServer) -> None:
    response = httpx.get(authorize_url(server, prompt="consent", login_hint="a@example.com",
                                       redirect_uri="https://evil.example/cb", state="mine", client_id="x"),
                         follow_redirects=False)
    sent = query(httpx.URL(response.headers["location"]))
    assert sent["prompt"] == "consent" and sent["login_hint"] == "a@example.com"
    assert sent["redirect_uri"] == f"{server.url}/auth/v1/callback"
    assert sent["client_id"] == "gatehouse" and sent["state"] != "mine"


def test_implicit_flow_returns_a_session_in_the_fragment(browser: ProviderBrowser, server: RunningServer,
                                                         auth: Auth) -> None:
    login = new_email("alice")
    back = browser.open(authorize_url(server, redirect_to=f"{APP}/welcome"), login=login)
    assert str(back).startswith(f"{APP}/welcome#"), back
    session = fragment(back)
    assert session["token_type"] == "bearer" and session["provider_token"]
    user = user_of(auth, session["access_token"])
    assert user["email"] == login and user["email_confirmed_at"]
    assert user["app_metadata"]["provider"] == "keycloak"
    assert [i["provider"] for i in user["identities"]] == ["keycloak"]
    identity = user["identities"][0]
    assert identity["id"] == login and identity["identity_data"]["email_verified"] is True
    assert user["user_metadata"]["full_name"].startswith("Test ")
    refreshed = auth.post("/token?grant_type=refresh_token", {"refresh_token": session["refresh_token"]})
    assert refreshed.status_code == 200


def test_pkce_flow_returns_a_code_the_client_exchanges_once(browser: ProviderBrowser, server: RunningServer,
                                                            auth: Auth) -> None:
    verifier, challenge = pkce_pair()
    back = browser.open(authorize_url(server, redirect_to=f"{APP}/cb", code_challenge=challenge,
                                      code_challenge_method="s256"), login=new_email("pkce"))
    code = query(back)["code"]
    assert back.fragment == ""
    wrong = auth.post("/token?grant_type=pkce", {"auth_code": code, "code_verifier": "x" * 43})
    assert wrong.status_code == 400 and wrong.json()["error_code"] == "bad_code_verifier"
    exchanged = auth.post("/token?grant_type=pkce", {"auth_code": code, "code_verifier": verifier})
    assert exchanged.status_code == 200, exchanged.text
    body = exchanged.json()
    assert body["provider_token"] and body["user"]["identities"][0]["provider"] == "keycloak"
    replay = auth.post("/token?grant_type=pkce", {"auth_code": code, "code_verifier": verifier})
    assert replay.status_code == 404 and replay.json()["error_code"] == "flow_state_not_found"


def test_the_same_identity_signs_in_to_the_same_account(browser: ProviderBrowser, server: RunningServer,
                                                        auth: Auth) -> None:
    login = new_email("again")
    first = fragment(browser.open(authorize_url(server), login=login))
    second = fragment(browser.open(authorize_url(server), login=login))
    assert user_of(auth, first["access_token"])["id"] == user_of(auth, second["access_token"])["id"]


def test_redirect_to_off_the_allow_list_goes_to_the_site_url(browser: ProviderBrowser, server: RunningServer) -> None:
    back = browser.open(authorize_url(server, redirect_to="https://evil.example/steal"), login=new_email("site"))
    assert str(back).startswith(f"{server.url}/#access_token=") or str(back).startswith(f"{server.url}#access_token=")


def test_the_provider_refusing_comes_back_as_an_error(server: RunningServer, browser: ProviderBrowser) -> None:
    to_provider = browser.open(authorize_url(server, redirect_to=f"{APP}/cb"), stop_before=browser.provider)
    state = query(to_provider)["state"]
    back = browser.open(f"{server.url}/auth/v1/callback?" + urlencode(
        {"state": state, "error": "access_denied", "error_description": "The user said no"}))
    assert str(back).startswith(f"{APP}/cb?")
    assert query(back)["error"] == "access_denied" and query(back)["error_description"] == "The user said no"
    assert fragment(back)["error"] == "access_denied"


# -- which account: the email rules -----------------------------------------------------------


def test_a_verified_address_joins_the_confirmed_account_that_has_it(
    browser: ProviderBrowser, server: RunningServer, auth: Auth, confirmed_session: Any
) -> None:
    email, session = confirmed_session(server)
    back = fragment(browser.open(authorize_url(server), login=email))
    user = user_of(auth, back["access_token"])
    assert user["id"] == session["user"]["id"]
    assert sorted(i["provider"] for i in user["identities"]) == ["email", "keycloak"]
    assert sorted(user["app_metadata"]["providers"]) == ["email", "keycloak"]
    assert auth.post("/token?grant_type=password", {"email": email, "password": PASSWORD}).status_code == 200


def test_pre_account_takeover_is_undone(browser: ProviderBrowser, server: RunningServer, auth: Auth) -> None:
    """Someone signs up with the victim's address and never confirms it; the victim then signs in
    with a provider that vouches for the address. The account becomes the victim's, and the
    squatter's password no longer opens it."""
    email = new_email("victim")
    squat = auth.sign_up(email, password="the squatter's password 42")
    assert squat.status_code == 200 and not squat.json().get("email_confirmed_at")
    back = fragment(browser.open(authorize_url(server), login=email))
    user = user_of(auth, back["access_token"])
    assert user["id"] == squat.json()["id"] and user["email_confirmed_at"]
    assert user["user_metadata"] == {} or "squatter" not in str(user["user_metadata"])
    refused = auth.post("/token?grant_type=password", {"email": email, "password": "the squatter's password 42"})
    assert refused.status_code == 400 and refused.json()["error_code"] == "invalid_credentials"


def test_an_unverified_address_never_joins_or_claims_an_account(
    browser: ProviderBrowser, server: RunningServer, auth: Auth, confirmed_session: Any
) -> None:
    email, session = confirmed_session(server)
    back = fragment(browser.open(authorize_url(server), login=f"unverified:{email}"))
    user = user_of(auth, back["access_token"])
    assert user["id"] != session["user"]["id"]
    assert user["email"] == "" and "email_confirmed_at" not in user
    assert user["identities"][0]["identity_data"]["email"] == email
    assert user["identities"][0]["identity_data"]["email_verified"] is False
    owner = user_of(auth, session["access_token"])
    assert [i["provider"] for i in owner["identities"]] == ["email"]


@pytest.mark.parametrize("login", [
    f"noemail:{uuid.uuid4().hex[:8]}",  # no address at all
    f"not-an-address-{uuid.uuid4().hex[:8]}",  # "verified", but not an address
    f"{'x' * 250}-{uuid.uuid4().hex[:8]}@example.com",  # "verified", but longer than an address may be
], ids=["no-address", "not-an-address", "too-long"])  # fixed ids: each test worker collects the same tests
def test_no_usable_address_makes_an_account_without_one(browser: ProviderBrowser, server: RunningServer,
                                                        auth: Auth, login: str) -> None:
    back = fragment(browser.open(authorize_url(server), login=login))
    user = user_of(auth, back["access_token"])
    assert user["email"] == "" and "email_confirmed_at" not in user
    assert user["identities"][0]["provider"] == "keycloak"


# -- hostile callbacks ------------------------------------------------------------------------


def _callback_url(browser: ProviderBrowser, server: RunningServer, login: str, **params: str) -> httpx.URL:
    """Sign in at the provider but stop before Gatehouse's callback: the URL the provider sent."""
    return browser.open(authorize_url(server, **params), login=login, stop_before=f"{server.url}/auth/v1/callback")


def test_a_forged_state_is_refused(server: RunningServer, browser: ProviderBrowser) -> None:
    back = browser.open(f"{server.url}/auth/v1/callback?state={secrets.token_urlsafe(32)}&code=abc")
    assert str(back).startswith(server.url)
    assert query(back)["error_code"] == "bad_oauth_state" and query(back)["error"] == "invalid_request"
    missing = browser.open(f"{server.url}/auth/v1/callback?code=abc")
    assert query(missing)["error_code"] == "bad_oauth_callback"
    huge = browser.open(f"{server.url}/auth/v1/callback?code=abc&state={'x' * 5000}")
    assert query(huge)["error_code"] == "bad_oauth_state"


def test_a_replayed_callback_is_refused(server: RunningServer, browser: ProviderBrowser) -> None:
    callback = _callback_url(browser, server, new_email("replay"), redirect_to=f"{APP}/cb")
    first = browser.open(str(callback))
    assert "access_token" in fragment(first)
    second = browser.open(str(callback))
    assert query(second)["error_code"] == "bad_oauth_state"
    assert "access_token" not in fragment(second)


def test_a_callback_in_another_browser_is_refused(server: RunningServer, provider: OIDCProvider,
                                                  browser: ProviderBrowser) -> None:
    """Login CSRF: an attacker signs in at the provider, then makes a victim's browser open the
    callback URL. The victim's browser lacks the binding cookie of the attacker's sign-in."""
    callback = _callback_url(browser, server, new_email("attacker"), redirect_to=f"{APP}/cb")
    victim = ProviderBrowser(provider, gatehouse=server.url)
    try:
        back = victim.open(str(callback))
    finally:
        victim.close()
    assert str(back).startswith(f"{APP}/cb?")
    assert query(back)["error_code"] == "bad_oauth_state" and "another browser" in query(back)["error_description"]
    assert "access_token" not in fragment(back)


def test_an_expired_state_is_refused(server: RunningServer, browser: ProviderBrowser, database_url: str) -> None:
    callback = _callback_url(browser, server, new_email("late"), redirect_to=f"{APP}/cb")
    run_sql(database_url, "UPDATE auth.oauth_states SET expires_at = now() - interval '1 second'")
    back = browser.open(str(callback))
    assert query(back)["error_code"] == "bad_oauth_state" and "expired" in query(back)["error_description"]


def test_an_id_token_with_the_wrong_nonce_is_refused(server: RunningServer, browser: ProviderBrowser,
                                                     database_url: str) -> None:
    """The provider puts the nonce Gatehouse sent in the ID token; one that differs from the state's
    (a token minted for another sign-in) is refused."""
    callback = _callback_url(browser, server, new_email("nonce"), redirect_to=f"{APP}/cb")
    run_sql(database_url, "UPDATE auth.oauth_states SET nonce = 'another-sign-in'")
    back = browser.open(str(callback))
    assert query(back)["error"] == "server_error"
    assert "nonce" in query(back)["error_description"]
    assert "access_token" not in fragment(back)


# -- ID tokens (signInWithIdToken) -----------------------------------------------------------


def id_token_from(provider: OIDCProvider, browser: ProviderBrowser, *, client_id: str, secret: str,
                  redirect_uri: str, login: str, nonce: str | None) -> tuple[str, str]:
    """An ID token the provider issues to ``client_id``, as a native SDK would obtain it, and the
    access token issued with it."""
    verifier, challenge = pkce_pair()
    params = {"client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri, "scope": "openid email",
              "state": "s" * 16, "code_challenge": challenge, "code_challenge_method": "S256"}
    if nonce is not None:
        params["nonce"] = nonce
    back = browser.open(f"{provider.issuer}/auth?" + urlencode(params), login=login, stop_before=redirect_uri)
    token = httpx.post(f"{provider.issuer}/token", auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": query(back)["code"], "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    })
    assert token.status_code == 200, token.text
    return str(token.json()["id_token"]), str(token.json()["access_token"])


def test_id_token_sign_in_and_its_refusals(server: RunningServer, provider: OIDCProvider, auth: Auth,
                                           browser: ProviderBrowser) -> None:
    callback = f"{server.url}/auth/v1/callback"
    nonce = secrets.token_urlsafe(16)
    login = new_email("native")
    token, access = id_token_from(provider, browser, client_id="gatehouse", secret=SECRET, redirect_uri=callback,
                                  login=login, nonce=hashlib.sha256(nonce.encode()).hexdigest())
    grant = "/token?grant_type=id_token"
    wrong_nonce = auth.post(grant, {"provider": "keycloak", "id_token": token, "nonce": "not-the-nonce"})
    assert wrong_nonce.status_code == 400 and "nonce" in wrong_nonce.json()["msg"]
    no_nonce = auth.post(grant, {"provider": "keycloak", "id_token": token})
    assert no_nonce.status_code == 400 and "nonce" in no_nonce.json()["msg"]
    # this provider puts the address in userinfo only: the access token given with the ID token reads it
    signed_in = auth.post(grant, {"provider": "keycloak", "id_token": token, "nonce": nonce, "access_token": access})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"]["email"] == login
    replayed = auth.post(grant, {"provider": "keycloak", "id_token": token, "nonce": nonce})
    assert replayed.status_code == 400 and "already been used" in replayed.json()["msg"]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    forged = auth.post(grant, {"provider": "keycloak", "id_token": tampered, "nonce": nonce})
    assert forged.status_code == 400 and forged.json()["error_code"] == "bad_id_token"
    other_app, _ = id_token_from(provider, browser, client_id="another-app", secret=OTHER_SECRET,
                              redirect_uri="http://127.0.0.1:9/callback", login=login, nonce=None)
    wrong_audience = auth.post(grant, {"provider": "keycloak", "id_token": other_app})
    assert wrong_audience.status_code == 400 and "another-app" in wrong_audience.json()["msg"]
    for body in ({"provider": "nonesuch", "id_token": token}, {"provider": "keycloak", "id_token": ""},
                 {"provider": "keycloak", "id_token": "x" * 20_000}, {"id_token": token}):
        refused = auth.post(grant, body)
        assert refused.status_code == 400, (body, refused.text)


def test_id_token_from_another_issuer_is_refused(server: RunningServer, auth: Auth,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """A second, real provider that also knows a client called "gatehouse": its tokens are signed
    by keys Gatehouse's keycloak does not publish, and name another issuer."""
    callback = f"{server.url}/auth/v1/callback"
    other = oidc_provider.start([oidc_provider.Client("gatehouse", SECRET, [callback])],
                                tmp_path_factory.mktemp("oidc-other") / "provider.log")
    other_browser = ProviderBrowser(other, gatehouse=server.url)
    try:
        token, _ = id_token_from(other, other_browser, client_id="gatehouse", secret=SECRET, redirect_uri=callback,
                              login=new_email("elsewhere"), nonce=None)
    finally:
        other_browser.close()
        other.stop()
    refused = auth.post("/token?grant_type=id_token", {"provider": "keycloak", "id_token": token})
    assert refused.status_code == 400 and refused.json()["error_code"] == "bad_id_token"


# -- linking and unlinking (GATEHOUSE_MANUAL_LINKING) ------------------------------------------


def test_linking_is_off_by_default(server: RunningServer, auth: Auth, confirmed_session: Any) -> None:
    _, session = confirmed_session(server)
    token = session["access_token"]
    start = auth.get("/user/identities/authorize?provider=keycloak&skip_http_redirect=true", token=token)
    assert start.status_code == 404 and start.json()["error_code"] == "manual_linking_disabled"
    identity = session["user"]["identities"][0]["identity_id"]
    gone = auth.http.delete(f"/user/identities/{identity}", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 404 and gone.json()["error_code"] == "manual_linking_disabled"


def test_link_then_unlink_an_identity(linking: RunningServer, provider: OIDCProvider, confirmed_session: Any) -> None:
    auth = Auth(linking)
    browser = ProviderBrowser(provider, gatehouse=linking.url)
    try:
        email, session = confirmed_session(linking)
        token = session["access_token"]
        assert auth.get("/user/identities/authorize?provider=keycloak").status_code == 401
        start = auth.get("/user/identities/authorize?" + urlencode(
            {"provider": "keycloak", "skip_http_redirect": "true", "redirect_to": f"{APP}/linked"}), token=token)
        assert start.status_code == 200, start.text
        linked_login = new_email("linked")
        back = browser.open(start.json()["url"], login=linked_login)
        assert str(back).startswith(f"{APP}/linked"), back
        user = user_of(auth, token)
        assert sorted(i["provider"] for i in user["identities"]) == ["email", "keycloak"]
        assert user["email"] == email  # linking another address does not change the account's

        # the same provider identity cannot be linked to a second account
        _, other = confirmed_session(linking)
        again = auth.get("/user/identities/authorize?provider=keycloak&skip_http_redirect=true",
                         token=other["access_token"])
        back = browser.open(again.json()["url"], login=linked_login)
        assert query(back)["error_code"] == "identity_already_exists"

        def delete(identity_id: str, as_token: str = token) -> httpx.Response:
            return auth.http.delete(f"/user/identities/{identity_id}", headers={"Authorization": f"Bearer {as_token}"})

        keycloak = next(i for i in user["identities"] if i["provider"] == "keycloak")
        assert delete(keycloak["identity_id"], other["access_token"]).json()["error_code"] == "identity_not_found"
        assert delete(str(uuid.uuid4())).status_code == 404
        assert delete("not-a-uuid").status_code == 404
        assert delete(keycloak["identity_id"]).status_code == 200
        left = user_of(auth, token)["identities"]
        assert [i["provider"] for i in left] == ["email"]
        last = delete(left[0]["identity_id"])
        assert last.status_code == 422 and last.json()["error_code"] == "single_identity_not_deletable"
    finally:
        browser.close()
        auth.close()


# -- through supabase-py, unmodified ----------------------------------------------------------


def test_supabase_py_sign_in_with_oauth_pkce(server: RunningServer, browser: ProviderBrowser) -> None:
    from supabase import ClientOptions, create_client

    supabase = create_client(server.url, server.keys.publishable_key, ClientOptions(flow_type="pkce"))
    try:
        started = supabase.auth.sign_in_with_oauth(
            {"provider": "keycloak", "options": {"redirect_to": f"{APP}/cb", "query_params": {"prompt": "login"}}}
        )
        login = new_email("py")
        back = browser.open(started.url, login=login)
        response = supabase.auth.exchange_code_for_session({"auth_code": query(back)["code"]})
        assert response.session is not None and response.user is not None
        assert response.user.email == login
        assert response.session.provider_token
        identities = supabase.auth.get_user_identities().identities
        assert [i.provider for i in identities] == ["keycloak"]
    finally:
        supabase.auth.close()
        supabase.auth.admin.close()


# -- admin ------------------------------------------------------------------------------------


def test_admin_sees_identities_and_deleting_the_user_deletes_them(
    browser: ProviderBrowser, server: RunningServer, auth: Auth
) -> None:
    login = new_email("admin-view")
    session = fragment(browser.open(authorize_url(server), login=login))
    user_id = user_of(auth, session["access_token"])["id"]
    admin = Auth(server, server.keys.secret_key)
    try:
        shown = admin.get(f"/admin/users/{user_id}").json()
        assert [i["provider"] for i in shown["identities"]] == ["keycloak"]
        assert shown["identities"][0]["identity_data"]["email"] == login
        assert admin.http.delete(f"/admin/users/{user_id}").status_code == 200
    finally:
        admin.close()
    again = fragment(browser.open(authorize_url(server), login=login))
    assert user_of(auth, again["access_token"])["id"] != user_id  # the identity went with the user


def test_a_callback_posted_as_a_form_works_like_the_redirect(server: RunningServer, browser: ProviderBrowser) -> None:
    """Providers answering with ``response_mode=form_post`` (Apple) POST the code and state."""
    callback = _callback_url(browser, server, new_email("posted"), redirect_to=f"{APP}/cb")
    posted = browser.http.post(f"{server.url}/auth/v1/callback", data=query(callback))
    assert posted.status_code == 302
    assert "access_token" in fragment(httpx.URL(posted.headers["location"]))
    oversized = browser.http.post(f"{server.url}/auth/v1/callback", data={f"f{i}": "x" for i in range(100)})
    assert oversized.status_code == 400


def test_the_binding_cookie_for_cross_site_posts_is_samesite_none_and_secure() -> None:
    from gatehouse.auth.oauth.api import binding_cookie
    from gatehouse.core.config import load_settings

    local = load_settings(api_external_url="http://127.0.0.1:8000")
    assert "SameSite=Lax" in binding_cookie(local, "v") and "Secure" not in binding_cookie(local, "v")
    posted = binding_cookie(local, "v", cross_site=True)
    assert "SameSite=None" in posted and "Secure" in posted
    behind = load_settings(api_external_url="https://example.com/api")
    assert "Path=/api/auth/v1/callback" in binding_cookie(behind, "v") and "Secure" in binding_cookie(behind, "v")


def test_supabase_py_link_and_unlink_identity(linking: RunningServer, provider: OIDCProvider) -> None:
    from supabase import ClientOptions, create_client

    email = new_email("pylink")
    admin = Auth(linking, linking.keys.secret_key)
    created = admin.post("/admin/users", {"email": email, "password": PASSWORD, "email_confirm": True})
    admin.close()
    assert created.status_code == 200, created.text
    supabase = create_client(linking.url, linking.keys.publishable_key, ClientOptions(flow_type="pkce"))
    browser = ProviderBrowser(provider, gatehouse=linking.url)
    try:
        supabase.auth.sign_in_with_password({"email": email, "password": PASSWORD})
        started = supabase.auth.link_identity({"provider": "keycloak", "options": {"redirect_to": f"{APP}/linked"}})
        back = browser.open(started.url, login=new_email("pylinked"))
        assert str(back).startswith(f"{APP}/linked"), back
        identities = supabase.auth.get_user_identities().identities
        assert sorted(i.provider for i in identities) == ["email", "keycloak"]
        supabase.auth.unlink_identity(next(i for i in identities if i.provider == "keycloak"))
        assert [i.provider for i in supabase.auth.get_user_identities().identities] == ["email"]
    finally:
        browser.close()
        supabase.auth.close()
        supabase.auth.admin.close()


def test_linking_a_provider_makes_an_anonymous_user_permanent(linking: RunningServer, provider: OIDCProvider) -> None:
    auth = Auth(linking)
    browser = ProviderBrowser(provider, gatehouse=linking.url)
    try:
        anonymous = auth.post("/signup", {"data": {"cart": ["tea"]}}).json()
        token = anonymous["access_token"]
        started = auth.get("/user/identities/authorize?provider=keycloak&skip_http_redirect=true", token=token)
        assert started.status_code == 200, started.text
        browser.open(started.json()["url"], login=new_email("was-anonymous"))
        user = user_of(auth, token)
        assert user["id"] == anonymous["user"]["id"] and user["is_anonymous"] is False
        assert [i["provider"] for i in user["identities"]] == ["keycloak"]
        assert user["app_metadata"]["provider"] == "keycloak" and user["user_metadata"]["cart"] == ["tea"]
    finally:
        browser.close()
        auth.close()
