"""The app's "Continue with ..." and its account page's linking, in Debian's Chromium, against a
real OpenID Connect provider (node-oidc-provider) on loopback.

The provider's development pages ask for a log-in name (any password) and then for consent; the
name decides the email (see tests/auth/oidc/provider.mjs).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from gatehouse.core.embedded import free_port
from tests.auth import oidc_provider
from tests.auth.oidc_provider import OIDCProvider
from tests.chromium import IN_CI, chromium, watched_page
from tests.support import RunningServer

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # pragma: no cover - the test extras install it
    if IN_CI:
        raise
    pytest.skip("the Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

SECRET = "the-browser-test-client-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def provider(port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    started = oidc_provider.start([oidc_provider.Client("gatehouse-web", SECRET, [f"http://127.0.0.1:{port}/auth/v1/callback"])],
                                  tmp_path_factory.mktemp("oidc") / "provider.log")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], provider: OIDCProvider, port: int) -> RunningServer:
    return server_factory(port=port, env={
        "GATEHOUSE_OAUTH_KEYCLOAK_CLIENT_ID": "gatehouse-web",
        "GATEHOUSE_OAUTH_KEYCLOAK_CLIENT_SECRET": SECRET,
        "GATEHOUSE_OAUTH_KEYCLOAK_ISSUER": provider.issuer,
        "GATEHOUSE_MANUAL_LINKING": "true",
        "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
    })


@pytest.fixture(scope="module")
def browser(server_factory: Callable[..., RunningServer]) -> Iterator[Browser]:
    with chromium() as found:
        yield found


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with watched_page(browser) as found:
        yield found


def sign_in_at_provider(page: Page, login: str) -> None:
    """The provider's log-in page, then its consent page."""
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.locator("button[type=submit]").click()
    page.locator("button[type=submit]").click()  # consent: "Continue"


def test_continue_with_the_provider_signs_in(page: Page, server: RunningServer, provider: OIDCProvider) -> None:
    email = f"web-{uuid.uuid4().hex[:8]}@example.com"
    page.goto(f"{server.url}/login")
    page.get_by_role("link", name="Continue with Keycloak").click()
    page.wait_for_url(f"{provider.issuer}/**")
    sign_in_at_provider(page, email)
    page.wait_for_url(f"{server.url}/account")
    expect(page.locator("#email")).to_have_value(email)
    expect(page.locator(".identities")).to_contain_text("Keycloak")
    expect(page.locator("#full_name")).to_have_value(f"Test web-{email[4:12]}")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["gh-access-token"]["httpOnly"] and cookies["gh-oauth-binding"]["httpOnly"]
    # signing out and back in with the provider finds the same account
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{server.url}/login**")
    page.get_by_role("link", name="Continue with Keycloak").click()
    page.wait_for_url(f"{server.url}/account")  # the provider remembers the browser: no pages this time
    expect(page.locator("#email")).to_have_value(email)


def test_link_and_unlink_from_the_account_page(page: Page, server: RunningServer, provider: OIDCProvider) -> None:
    email = f"link-{uuid.uuid4().hex[:8]}@example.com"
    # an email-and-password account: made through the admin API, confirmed, then signed in on the page
    import httpx
    created = httpx.post(f"{server.url}/auth/v1/admin/users", headers={"apikey": server.keys.secret_key},
                         json={"email": email, "password": "a long passphrase 4 links", "email_confirm": True})
    assert created.status_code == 200, created.text
    page.goto(f"{server.url}/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill("a long passphrase 4 links")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/account")
    expect(page.locator(".identities li")).to_have_count(1)
    forged = page.goto(f"{server.url}/account/link/keycloak?csrf=forged")
    assert forged is not None and forged.status == 403  # another site's link cannot start a link
    page.goto(f"{server.url}/account")
    page.get_by_role("link", name="Link Keycloak").click()
    page.wait_for_url(f"{provider.issuer}/**")
    sign_in_at_provider(page, f"other-{email}")
    page.wait_for_url(f"{server.url}/account")
    expect(page.locator(".identities li")).to_have_count(2)
    expect(page.locator(".identities")).to_contain_text(f"other-{email}")
    expect(page.locator("#email")).to_have_value(email)
    page.locator("#unlink-keycloak").click()
    page.wait_for_url(f"{server.url}/account?changed=identities")
    expect(page.locator(".identities li")).to_have_count(1)
    expect(page.locator("#unlink-email")).to_have_count(0)  # the last way in cannot be removed


def test_an_unknown_provider_and_a_bare_landing_are_refused(page: Page, server: RunningServer) -> None:
    response = page.goto(f"{server.url}/account/link/keycloak?csrf=forged")
    assert response is not None and page.url == f"{server.url}/login"  # not signed in
    response = page.goto(f"{server.url}/login/nonesuch")
    assert response is not None and response.status == 404
    response = page.goto(f"{server.url}/auth/oauth?code=forged")
    assert response is not None and response.status == 400
    expect(page.locator("body")).to_contain_text("another browser")
    response = page.goto(f"{server.url}/auth/oauth?error=access_denied&error_description=%3Cb%3Eno%3C/b%3E")
    assert response is not None and response.status == 400
    expect(page.locator("body")).to_contain_text("<b>no</b>")  # shown as text, not markup
