"""Where redirect_to may lead: the allow list is matched on the parsed URL, never on the raw string."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from gatehouse.auth.redirects import Redirects
from gatehouse.core.config import ConfigError, load_settings
from tests.auth.helpers import PASSWORD, Auth, new_email
from tests.support import RunningServer

SITE = "https://app.example.org"
ALLOW = ",".join(  # noqa: FLY002 - one pattern per line reads better than one long string
    [
        "https://*.example.com/*",
        "https://exact.example.net/callback",
        "https://paths.example.net/auth/*/done",
        "https://deep.example.net/**",
        "https://**.wild.example.net",
        "http://localhost:3000",
        "https://bücher.example/*",
        "https://xn--mnchen-3ya.example",
        "http://[::1]:8080/*",
    ]
)


@pytest.fixture(scope="module")
def redirects() -> Redirects:
    return Redirects(load_settings(site_url=SITE, redirect_allow_list=ALLOW))


ALLOWED = [
    # the site itself, any path, query and fragment kept
    (SITE, SITE),
    (SITE + "/account?x=1#top", SITE + "/account?x=1#top"),
    ("HTTPS://APP.Example.ORG/Path", "https://app.example.org/Path"),
    ("https://app.example.org./welcome", "https://app.example.org/welcome"),
    ("https://app.example.org:443/", "https://app.example.org:443/"),
    # one label for *
    ("https://a.example.com/", "https://a.example.com/"),
    ("https://a.example.com/any/path?q=1#f", "https://a.example.com/any/path?q=1#f"),
    ("https://A.EXAMPLE.COM./x", "https://a.example.com/x"),
    ("https://a.example。com/x", "https://a.example.com/x"),  # a full-width dot is a dot to browsers
    # exact and globbed paths
    ("https://exact.example.net/callback", "https://exact.example.net/callback"),
    ("https://exact.example.net/callback?next=/x", "https://exact.example.net/callback?next=/x"),
    ("https://paths.example.net/auth/github/done", "https://paths.example.net/auth/github/done"),
    ("https://deep.example.net/a/b/c", "https://deep.example.net/a/b/c"),
    ("https://a.b.wild.example.net/", "https://a.b.wild.example.net/"),
    ("http://localhost:3000/auth/callback", "http://localhost:3000/auth/callback"),
    # international names: unicode and punycode are one host
    ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
    ("https://xn--bcher-kva.example/x", "https://xn--bcher-kva.example/x"),
    ("https://münchen.example/", "https://xn--mnchen-3ya.example/"),
    ("http://[::1]:8080/cb", "http://[::1]:8080/cb"),
]

REFUSED = [
    # the reported bypass: the allowed suffix in the path, query or fragment
    "https://evil.test/.example.com/",
    "https://evil.test?.example.com/",
    "https://evil.test#.example.com/",
    "https://evil.test/a.example.com/x",
    # userinfo: the host is what follows the @
    "https://example.com@evil.test/",
    "https://a.example.com@evil.test/",
    "https://a.example.com:pw@evil.test/",
    "https://evil.test@a.example.com/",  # even towards an allowed host: no credentials in redirects
    # backslashes: browsers read them as slashes
    "https://evil.test\\.example.com/",
    "https://a.example.com\\@evil.test/",
    "https:\\\\evil.test/",
    # the wildcard is one whole label on the left
    "https://example.com/",
    "https://a.b.example.com/",
    "https://evilexample.com/",
    "https://a.example.com.evil.test/",
    "https://wild.example.net/",
    # scheme, port and path must match
    "http://a.example.com/",
    "https://a.example.com:8443/",
    "http://localhost:3001/",
    "https://localhost:3000/",
    "https://exact.example.net/callback2",
    "https://exact.example.net/",
    "https://paths.example.net/auth/a/b/done",
    "http://app.example.org/",
    "https://app.example.org:444/",
    # encoded characters in the host, control characters, spaces
    "https://evil.test%2F.example.com/",
    "https://evil.test%2fa.example.com/",
    "https://a.example.com%40evil.test/",
    "https://a.example.com%00.evil.test/",
    "https://evil.test\t.example.com/",
    "https://evil.test\n.example.com/",
    "https://a.example.com /",
    "https://evil.test%E3%80%82example.com/",
    # IDN tricks: a look-alike is another host; full-width dots split labels as browsers do
    "https://bücher.example.evil.test/",
    "https://xn--bcher-kva.example.evil.test/",
    "https://münchen.example.evil.test/",
    "https://mùnchen.example/",
    "https://evil。test/",
    "https://a.example。com.evil.test/",
    # no scheme, other schemes, protocol-relative, no host
    "evil.test",
    "a.example.com/x",
    "//evil.test/",
    "//a.example.com/",
    "/account",
    "javascript:alert(1)",
    "javascript://a.example.com/%0aalert(1)",
    "JAVASCRIPT:alert(1)",
    "data:text/html,hi",
    "ftp://a.example.com/",
    "https:evil.test",
    "https:/evil.test",
    "https:///evil.test",
    "https://",
    "https://:443/",
    "https://.example.com/",
    "https://a..example.com/",
    "https://-a.example.com/",
    "https://a.example.com:99999/",
    "https://a.example.com:port/",
    "https://[::1/",
    "",
]


@pytest.mark.parametrize(("url", "expected"), ALLOWED)
def test_allowed_urls_are_rebuilt_from_their_checked_parts(redirects: Redirects, url: str, expected: str) -> None:
    assert redirects.check(url) == expected
    assert redirects.allowed(url) == expected


@pytest.mark.parametrize("url", REFUSED)
def test_refused_urls_fall_back_to_the_site(redirects: Redirects, url: str) -> None:
    assert redirects.check(url) is None
    assert redirects.allowed(url) == SITE


@pytest.mark.parametrize(
    "url", ["https://evil.test/.example.com/", "https://example.com@evil.test", "//evil.test", "javascript:x"]
)
def test_confirm_links_never_carry_a_refused_target(redirects: Redirects, url: str) -> None:
    link = redirects.confirm_link("abc", "email", url)
    assert parse_qs(urlsplit(link).query) == {"token_hash": ["abc"], "type": ["email"]}


def test_confirm_links_carry_an_allowed_target(redirects: Redirects) -> None:
    link = redirects.confirm_link("abc", "email", "https://a.example.com/next")
    assert parse_qs(urlsplit(link).query)["next"] == ["https://a.example.com/next"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("https://app.*.example.com", "whole labels on the left"),
        ("https://*example.com", "whole labels on the left"),
        ("https://a.*", "whole labels on the left"),
        ("https://*.com", "two fixed labels"),
        ("*.example.com", "must look like"),
        ("javascript://x.example.com", "must look like"),
        ("https://user@example.com", "must look like"),
        ("https://example.com/?x", "may not contain"),
        ("https://exa mple.com", "may not contain"),
        ("https://exa%2Fmple.com", "valid host"),
        ("https://example.com:99999", "is not a URL"),
    ],
)
def test_bad_allow_list_entries_stop_the_start(entry: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="GATEHOUSE_REDIRECT_ALLOW_LIST") as error:
        Redirects(load_settings(site_url=SITE, redirect_allow_list=entry))
    assert problem in str(error.value)


def test_the_verify_link_does_not_redirect_to_a_lookalike(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(
        env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_REDIRECT_ALLOW_LIST": "https://*.example.com/*"}
    )
    auth = Auth(server)
    try:
        for target in ("https://evil.test/.example.com/", "https://evil.test?.example.com/",
                       "https://evil.test#.example.com/", "https://example.com@evil.test/"):
            email = new_email()
            auth.sign_up(email)
            token_hash, _ = auth.latest_link(email)
            response = auth.http.get("/verify", params={"token": token_hash, "type": "signup", "redirect_to": target})
            assert response.status_code == 303
            location = urlsplit(response.headers["location"])
            assert (location.scheme, location.netloc) == tuple(urlsplit(server.url)[:2]), location
            assert parse_qs(location.fragment)["access_token"]
        email = new_email()
        auth.sign_up(email)
        token_hash, _ = auth.latest_link(email)
        good = auth.http.get(
            "/verify", params={"token": token_hash, "type": "signup", "redirect_to": "https://a.example.com/welcome"}
        )
        assert good.headers["location"].startswith("https://a.example.com/welcome#access_token=")
        # the emailed confirm link names no lookalike as next either
        email = new_email()
        auth.post("/signup", {"email": email, "password": PASSWORD},
                  params={"redirect_to": "https://evil.test/.example.com/"})
        assert "evil.test" not in auth.messages(email)[0]["text"]
    finally:
        auth.close()
