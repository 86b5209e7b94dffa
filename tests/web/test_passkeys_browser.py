"""Passkeys in Debian's Chromium, through the unmodified supabase-js (its UMD build), with a
virtual authenticator (the DevTools WebAuthn domain over Playwright's CDP session).

The page is one of Gatehouse's own on ``http://localhost:PORT`` (browsers allow WebAuthn on
localhost, not on IP addresses), and ``GATEHOUSE_SITE_URL`` names that origin: the relying party.
supabase-js is added to the page as a script (the context bypasses the page's CSP for that).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.core.embedded import free_port
from tests.auth.helpers import PASSWORD
from tests.chromium import IN_CI, chromium, watched_page
from tests.clients.test_js_client import js_client, node  # noqa: F401 - the shared fixtures
from tests.support import RunningServer

try:
    from playwright.sync_api import Browser, CDPSession, Page
except ImportError:  # pragma: no cover - the test extras install it
    if IN_CI:
        raise
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

UMD = Path("node_modules/@supabase/supabase-js/dist/umd/supabase.js")


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    port = free_port()
    return server_factory(port=port, env={"GATEHOUSE_SITE_URL": f"http://localhost:{port}",
                                          "GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def browser(server_factory: Callable[..., RunningServer]) -> Iterator[Browser]:
    with chromium() as found:
        yield found


class Tab:
    """A page of Gatehouse with supabase-js loaded, a client made, and a virtual authenticator."""

    def __init__(self, page: Page, cdp: CDPSession, authenticator: str) -> None:
        self.page, self.cdp, self.authenticator = page, cdp, authenticator

    def run(self, script: str, arg: Any = None) -> Any:
        """``script`` is the body of an async function of (supabase, arg)."""
        return self.page.evaluate(f"async (arg) => {{ const supabase = window.client; {script} }}", arg)


@pytest.fixture
def tab(browser: Browser, server: RunningServer, js_client: Path) -> Iterator[Tab]:  # noqa: F811
    site = server.env["GATEHOUSE_SITE_URL"]
    with watched_page(browser, timeout_ms=30_000, bypass_csp=True) as page:
        page.goto(f"{site}/login")
        page.add_script_tag(path=str(js_client / UMD))
        page.evaluate("([url, key]) => { window.client = supabase.createClient(url, key, {auth: {persistSession: true}}) }",
                      [site, server.keys.publishable_key])
        cdp, authenticator = virtual_authenticator(page)
        yield Tab(page, cdp, authenticator)


def virtual_authenticator(page: Page) -> tuple[CDPSession, str]:
    """A platform authenticator with resident keys and user verification, through the page's DevTools session."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    return cdp, added["authenticatorId"]


def confirmed_user(server: RunningServer) -> str:
    email = f"passkey-{uuid.uuid4().hex[:8]}@example.com"
    created = httpx.post(f"{server.url}/auth/v1/admin/users", headers={"apikey": server.keys.secret_key},
                         json={"email": email, "password": PASSWORD, "email_confirm": True}, timeout=10)
    assert created.status_code == 200, created.text
    return email


def sign_in_and_register(tab: Tab, email: str) -> dict[str, Any]:
    return tab.run("""
        const signedIn = await supabase.auth.signInWithPassword({email: arg.email, password: arg.password});
        if (signedIn.error) return {error: signedIn.error.message};
        const registered = await supabase.auth.registerPasskey();
        return {error: registered.error && registered.error.message, data: registered.data};
    """, {"email": email, "password": PASSWORD})  # type: ignore[no-any-return]


def test_register_then_sign_in_with_a_passkey(tab: Tab, server: RunningServer) -> None:
    email = confirmed_user(server)
    registered = sign_in_and_register(tab, email)
    assert registered["error"] is None, registered
    assert registered["data"]["id"] and registered["data"]["friendly_name"] == "Passkey"
    listed = tab.run("return (await supabase.auth.passkey.list()).data")
    assert [p["id"] for p in listed] == [registered["data"]["id"]]
    renamed = tab.run("return (await supabase.auth.passkey.update({passkeyId: arg, friendlyName: 'Laptop'})).data",
                      registered["data"]["id"])
    assert renamed["friendly_name"] == "Laptop"
    signed_in = tab.run("""
        await supabase.auth.signOut();
        const result = await supabase.auth.signInWithPasskey();
        if (result.error) return {error: result.error.message};
        const level = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
        return {email: result.data.user.email, level: level.data.currentLevel,
                methods: level.data.currentAuthenticationMethods.map((m) => m.method)};
    """)
    assert signed_in == {"email": email, "level": "aal2", "methods": ["passkey"]}, signed_in
    used = tab.run("return (await supabase.auth.passkey.list()).data")
    assert used[0]["last_used_at"]
    deleted = tab.run("return (await supabase.auth.passkey.delete({passkeyId: arg})).error", registered["data"]["id"])
    assert deleted is None
    again = tab.run("await supabase.auth.signOut(); return (await supabase.auth.signInWithPasskey()).error?.message")
    assert again and "unknown passkey" in again


def _assertion(tab: Tab, origin_page: Page | None = None) -> tuple[str, dict[str, Any]]:
    """A challenge from Gatehouse and the authenticator's answer to it, not sent yet."""
    options = tab.run("return (await supabase.auth.passkey.startAuthentication()).data")
    page = origin_page or tab.page
    credential = page.evaluate("""async (options) => {
        const b64 = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
        const enc = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
        const got = await navigator.credentials.get({publicKey: {...options, challenge: b64(options.challenge)}});
        return {id: got.id, rawId: enc(got.rawId), type: got.type, clientExtensionResults: {},
                response: {clientDataJSON: enc(got.response.clientDataJSON),
                           authenticatorData: enc(got.response.authenticatorData),
                           signature: enc(got.response.signature),
                           userHandle: got.response.userHandle ? enc(got.response.userHandle) : null}};
    }""", options["options"])
    return options["challenge_id"], credential


def _verify(server: RunningServer, challenge_id: str, credential: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/auth/v1/passkeys/authentication/verify", timeout=10,
                      headers={"apikey": server.keys.publishable_key},
                      json={"challenge_id": challenge_id, "credential": credential})


def test_hostile_assertions_are_refused(tab: Tab, server: RunningServer, browser: Browser) -> None:
    email = confirmed_user(server)
    assert sign_in_and_register(tab, email)["error"] is None
    # 1. an answer made on another origin (same RP id, another port): a phishing page's
    other = tab.page.context.new_page()
    port = server.env["GATEHOUSE_SITE_URL"].rsplit(":", 1)[1]
    other_origin = f"http://localhost:{int(port) + 1 if int(port) < 65535 else int(port) - 1}"
    other.route(f"{other_origin}/**", lambda route: route.fulfill(status=200, body="<html><body>x</body></html>",
                                                                  content_type="text/html"))
    other.goto(f"{other_origin}/")
    # the same passkey, in an authenticator of the other page (a virtual one belongs to one page)
    cdp, copy = virtual_authenticator(other)
    for credential in tab.cdp.send("WebAuthn.getCredentials", {"authenticatorId": tab.authenticator})["credentials"]:
        cdp.send("WebAuthn.addCredential", {"authenticatorId": copy, "credential": credential})
    challenge_id, phished = _assertion(tab, other)
    refused = _verify(server, challenge_id, phished)
    assert refused.status_code == 400 and refused.json()["error_code"] == "webauthn_verification_failed"
    assert "origin" in refused.json()["msg"].lower()
    # 2. a counter that went backwards: an older answer sent after a newer one
    first_challenge, older = _assertion(tab)
    second_challenge, newer = _assertion(tab)
    assert _verify(server, second_challenge, newer).status_code == 200
    cloned = _verify(server, first_challenge, older)
    assert cloned.status_code == 400 and "sign count" in cloned.json()["msg"].lower()
    # 3. a replayed answer: its challenge is gone
    replayed = _verify(server, second_challenge, newer)
    assert replayed.status_code == 400 and replayed.json()["error_code"] == "webauthn_challenge_not_found"
    # 4. junk
    for body in ({"challenge_id": "not-a-uuid", "credential": newer}, {"challenge_id": second_challenge},
                 {"challenge_id": str(uuid.uuid4()), "credential": {"rawId": "AAAA"}}):
        junk = httpx.post(f"{server.url}/auth/v1/passkeys/authentication/verify", json=body, timeout=10,
                          headers={"apikey": server.keys.publishable_key})
        assert junk.status_code == 400, (json.dumps(body)[:200], junk.text)


def test_passkey_routes_need_a_user(server: RunningServer) -> None:
    headers = {"apikey": server.keys.publishable_key}
    assert httpx.get(f"{server.url}/auth/v1/passkeys", headers=headers).status_code == 401
    assert httpx.post(f"{server.url}/auth/v1/passkeys/registration/options", headers=headers).status_code == 401
    assert httpx.delete(f"{server.url}/auth/v1/passkeys/{uuid.uuid4()}", headers=headers).status_code == 401


def test_passkeys_from_the_apps_own_pages(browser: Browser, server: RunningServer) -> None:
    """The account page's "Add a passkey" and the log-in page's "Sign in with a passkey", under the
    pages' own CSP (no bypass here): their one script does the ceremony."""
    site = server.env["GATEHOUSE_SITE_URL"]
    with watched_page(browser) as page:
        virtual_authenticator(page)
        email = confirmed_user(server)
        page.goto(f"{site}/login")
        page.locator("#email").fill(email)
        page.locator("#password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{site}/account")
        page.get_by_role("button", name="Add a passkey").click()
        page.wait_for_url(f"{site}/account?changed=passkeys")
        name = page.locator(".passkeys input[name=name]")
        assert name.input_value() == "Passkey"
        name.fill("Work laptop")
        page.locator(".passkeys").get_by_role("button", name="Rename").click()
        page.wait_for_url(f"{site}/account?changed=passkeys")
        assert page.locator(".passkeys input[name=name]").input_value() == "Work laptop"
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{site}/login**")
        page.get_by_role("button", name="Sign in with a passkey").click()
        page.wait_for_url(f"{site}/account")
        assert page.locator("#email").input_value() == email
        access = next(c for c in page.context.cookies() if c["name"] == "gh-access-token")["value"]
        payload = json.loads(base64.urlsafe_b64decode(access.split(".")[1] + "=="))
        assert payload["aal"] == "aal2" and payload["amr"][0]["method"] == "passkey"
        page.locator(".passkeys").get_by_role("button", name="Remove").click()
        page.wait_for_url(f"{site}/account?changed=passkeys")
        assert page.locator(".passkeys input[name=name]").count() == 0
        # without the page's CSRF token, the JSON calls are refused
        forged = page.evaluate("""async () => (await fetch('/login/passkey/options', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: '{}'})).status""")
        assert forged == 403
