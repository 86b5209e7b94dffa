"""The built-in providers that cannot be reached offline, as contract tests.

GitHub, Discord and Microsoft are served here by ``FakeProviderAPI``, an in-process stand-in (a
fake, named so) answering with the responses their documentation gives (``FIXTURES``). What is
tested is Gatehouse's side of the contract: the URLs and parameters it sends, how it reads the
answers (which address, verified or not), and its refusals. The generic OpenID Connect path is
tested end to end against a real provider in test_oauth.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from gatehouse.auth.oauth.providers import ProviderError, Providers, ProviderTokens, build
from gatehouse.core.config import ConfigError, OAuthProviderSettings, oauth_variables

CALLBACK = "https://api.example.com/auth/v1/callback"

#: Answers as the providers document them (trimmed to the fields that matter).
FIXTURES: dict[str, Any] = {
    # https://docs.github.com/en/rest/users/users#get-the-authenticated-user
    "github_user": {"login": "octocat", "id": 583231, "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
                    "name": "The Octocat", "email": None},
    # https://docs.github.com/en/rest/users/emails#list-email-addresses-for-the-authenticated-user
    "github_emails": [{"email": "octocat@github.com", "verified": True, "primary": True, "visibility": "public"},
                      {"email": "other@example.com", "verified": False, "primary": False, "visibility": None}],
    # https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps (Accept: application/json)
    "github_token": {"access_token": "gho_16C7e42F292c6912E7710c838347Ae178B4a", "scope": "read:user,user:email",
                     "token_type": "bearer"},
    # https://discord.com/developers/docs/resources/user#user-object
    "discord_user": {"id": "80351110224678912", "username": "nelly", "global_name": "Nelly", "avatar":
                     "8342729096ea3675442027381ff50dfe", "verified": True, "email": "nelly@discord.com"},
    "discord_token": {"access_token": "6qrZcUqja7812RVdnEKjpzOL4CvHBFG", "token_type": "Bearer", "expires_in": 604800,
                      "refresh_token": "D43f5y0ahjqew82jZ4NViEr2YafMKhue", "scope": "identify email"},
}


class FakeProviderAPI:
    """A fake of the providers' HTTP APIs: routes by URL, records what Gatehouse sent."""

    def __init__(self, routes: dict[str, Callable[[httpx2.Request], httpx2.Response]]) -> None:
        self.routes = routes
        self.seen: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        url = str(request.url).split("?")[0]
        handler = self.routes.get(url)
        return handler(request) if handler else httpx2.Response(404, json={"message": "Not Found"})

    @property
    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)


def answer(value: Any, status: int = 200) -> Callable[[httpx2.Request], httpx2.Response]:
    return lambda request: httpx2.Response(status, json=value)


def settings(name: str, **fields: str) -> OAuthProviderSettings:
    return OAuthProviderSettings(name=name, **({"client_id": "client-1", "client_secret": "secret-1"} | fields))


# -- configuration ----------------------------------------------------------------------------


def test_variables_name_providers_and_their_fields() -> None:
    found = oauth_variables(
        {"GATEHOUSE_OAUTH_GITHUB_CLIENT_ID": "from-env", "GATEHOUSE_OAUTH_CORP_SSO_ISSUER": "https://sso.example.com",
         "GATEHOUSE_OAUTH_DISCORD_ENABLED": "false", "OTHER": "x"},
        {"GATEHOUSE_OAUTH_GITHUB_CLIENT_ID": "from-dotenv", "GATEHOUSE_OAUTH_GITHUB_CLIENT_SECRET": "dotenv-secret"},
    )
    assert found["github"].client_id == "from-env" and found["github"].client_secret == "dotenv-secret"
    assert found["corp_sso"].issuer == "https://sso.example.com"
    assert found["discord"].enabled is False


@pytest.mark.parametrize("variable", [
    "GATEHOUSE_OAUTH_GITHUB_CLIENTID", "GATEHOUSE_OAUTH__CLIENT_ID", "GATEHOUSE_OAUTH_CLIENT_ID",
    "GATEHOUSE_OAUTH_BAD-NAME_CLIENT_ID",
])
def test_a_malformed_variable_is_named(variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        oauth_variables({variable: "x"}, {})


def test_a_bad_value_is_named() -> None:
    with pytest.raises(ConfigError, match="GATEHOUSE_OAUTH_GITHUB_ENABLED"):
        oauth_variables({"GATEHOUSE_OAUTH_GITHUB_ENABLED": "perhaps"}, {})


def test_building_refuses_what_cannot_work() -> None:
    with pytest.raises(ConfigError, match="GATEHOUSE_OAUTH_CORP_ISSUER is required"):
        build(settings("corp"), CALLBACK)
    with pytest.raises(ConfigError, match="GATEHOUSE_OAUTH_GITHUB_CLIENT_ID is required"):
        build(settings("github", client_id=""), CALLBACK)
    with pytest.raises(ConfigError, match="ISSUER must be the issuer's URL"):
        build(settings("corp", issuer="not a url"), CALLBACK)


def test_disabled_providers_are_left_out_and_names_are_case_blind() -> None:
    providers = Providers({"github": settings("github"), "discord": settings("discord", enabled="false")}, CALLBACK)
    assert providers.names == ("github",)
    assert providers.get("GitHub") is not None and providers.get("discord") is None


# -- GitHub -----------------------------------------------------------------------------------


def github_api(emails: Any = None) -> FakeProviderAPI:
    return FakeProviderAPI({
        "https://github.com/login/oauth/access_token": answer(FIXTURES["github_token"]),
        "https://api.github.com/user": answer(FIXTURES["github_user"]),
        "https://api.github.com/user/emails": answer(FIXTURES["github_emails"] if emails is None else emails),
    })


async def test_github_authorization_url() -> None:
    provider = build(settings("github"), CALLBACK)
    url = await provider.authorization_url(state="st", nonce="nn", verifier="v" * 50, scopes="repo", extra={})
    parts = urlsplit(url)
    sent = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://github.com/login/oauth/authorize"
    assert sent["client_id"] == "client-1" and sent["redirect_uri"] == CALLBACK and sent["state"] == "st"
    assert sent["scope"] == "read:user user:email repo" and sent["code_challenge_method"] == "S256"


async def test_github_reads_the_primary_verified_address() -> None:
    api = github_api()
    provider = build(settings("github"), CALLBACK, api.transport)
    tokens = await provider.exchange("the-code", "v" * 50)
    assert tokens.access_token == FIXTURES["github_token"]["access_token"]
    exchange = api.seen[0]
    form = parse_qs(exchange.content.decode())
    assert form["code"] == ["the-code"] and form["code_verifier"] == ["v" * 50]
    assert exchange.headers["accept"] == "application/json" and exchange.headers["authorization"].startswith("Basic ")
    found = await provider.identity(tokens, "nonce-unused")
    assert (found.subject, found.email, found.email_verified) == ("583231", "octocat@github.com", True)
    assert found.data["user_name"] == "octocat" and found.data["full_name"] == "The Octocat"
    assert api.seen[1].headers["authorization"] == f"Bearer {tokens.access_token}"


async def test_github_unverified_or_missing_primary_address_is_not_verified() -> None:
    unverified = [{"email": "octocat@github.com", "verified": False, "primary": True}]
    provider = build(settings("github"), CALLBACK, github_api(unverified).transport)
    found = await provider.identity(ProviderTokens("t"), "n")
    assert found.email == "octocat@github.com" and found.email_verified is False
    provider = build(settings("github"), CALLBACK, github_api([]).transport)
    found = await provider.identity(ProviderTokens("t"), "n")
    assert found.email is None and found.email_verified is False


async def test_github_enterprise_uses_its_own_hosts() -> None:
    api = FakeProviderAPI({
        "https://git.corp.example/api/v3/user": answer(FIXTURES["github_user"]),
        "https://git.corp.example/api/v3/user/emails": answer(FIXTURES["github_emails"]),
    })
    provider = build(settings("github", url="https://git.corp.example"), CALLBACK, api.transport)
    assert (await provider.endpoints())[0] == "https://git.corp.example/login/oauth/authorize"
    assert (await provider.identity(ProviderTokens("t"), "n")).subject == "583231"


async def test_github_refusing_the_code_is_a_provider_error() -> None:
    api = FakeProviderAPI({"https://github.com/login/oauth/access_token": answer(
        {"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."})})
    provider = build(settings("github"), CALLBACK, api.transport)
    with pytest.raises(ProviderError, match="incorrect or expired"):
        await provider.exchange("stale", "v" * 50)


async def test_a_provider_api_failure_is_a_provider_error() -> None:
    api = FakeProviderAPI({"https://api.github.com/user": answer({"message": "Bad credentials"}, 401)})
    provider = build(settings("github"), CALLBACK, api.transport)
    with pytest.raises(ProviderError, match="401"):
        await provider.identity(ProviderTokens("t"), "n")


# -- Discord ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("verified", "expected"), [(True, True), (False, False)])
async def test_discord_reads_the_address_and_its_verified_flag(verified: bool, expected: bool) -> None:
    api = FakeProviderAPI({
        "https://discord.com/api/oauth2/token": answer(FIXTURES["discord_token"]),
        "https://discord.com/api/users/@me": answer(FIXTURES["discord_user"] | {"verified": verified}),
    })
    provider = build(settings("discord"), CALLBACK, api.transport)
    tokens = await provider.exchange("code", "v" * 50)
    assert tokens.refresh_token == FIXTURES["discord_token"]["refresh_token"]
    found = await provider.identity(tokens, "n")
    assert found.subject == "80351110224678912" and found.email == "nelly@discord.com"
    assert found.email_verified is expected
    assert found.data["avatar_url"].startswith("https://cdn.discordapp.com/avatars/80351110224678912/")


# -- Microsoft (OpenID Connect with a tenant in the issuer) ------------------------------------


def microsoft_api(key: RSAKey, tenant_path: str = "common") -> FakeProviderAPI:
    base = f"https://login.microsoftonline.com/{tenant_path}/v2.0"
    return FakeProviderAPI({
        f"{base}/.well-known/openid-configuration": answer({
            "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
            "authorization_endpoint": f"https://login.microsoftonline.com/{tenant_path}/oauth2/v2.0/authorize",
            "token_endpoint": f"https://login.microsoftonline.com/{tenant_path}/oauth2/v2.0/token",
            "jwks_uri": f"https://login.microsoftonline.com/{tenant_path}/discovery/v2.0/keys",
        }),
        f"https://login.microsoftonline.com/{tenant_path}/discovery/v2.0/keys":
            answer(KeySet([key]).as_dict(private=False)),
    })


def microsoft_token(key: RSAKey, **claims: Any) -> str:
    now = int(time.time())
    tid = "9188040d-6c67-4c5b-b112-36a304b66dad"
    body = {"iss": f"https://login.microsoftonline.com/{tid}/v2.0", "tid": tid, "aud": "client-1", "sub": "AAAAA-sub",
            "iat": now, "exp": now + 600, "email": "ada@contoso.com", "name": "Ada"} | claims
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key)


@pytest.mark.parametrize(("extra", "verified"), [({"xms_edov": True}, True), ({}, False),
                                                 ({"email_verified": True}, False)])
async def test_microsoft_trusts_an_address_only_with_xms_edov(extra: dict[str, Any], verified: bool) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "ms-1"})
    provider = build(settings("azure"), CALLBACK, microsoft_api(key).transport)
    found = await provider.verify_id_token(microsoft_token(key, **extra), None, nonce_hashed=True)
    assert found.email == "ada@contoso.com" and found.email_verified is verified


async def test_microsoft_common_endpoint_checks_the_tenant_issuer() -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "ms-1"})
    provider = build(settings("azure"), CALLBACK, microsoft_api(key).transport)
    forged = microsoft_token(key, iss="https://login.microsoftonline.com/another-tenant/v2.0")
    with pytest.raises(ProviderError, match="issued by"):
        await provider.verify_id_token(forged, None, nonce_hashed=True)
    single = build(settings("azure", tenant="contoso.onmicrosoft.com"), CALLBACK,
                   microsoft_api(key, "contoso.onmicrosoft.com").transport)
    with pytest.raises(ProviderError, match="issued by"):
        await single.verify_id_token(microsoft_token(key), None, nonce_hashed=True)


async def test_an_unreadable_discovery_document_is_a_provider_error() -> None:
    api = FakeProviderAPI({"https://idp.example.com/.well-known/openid-configuration":
                           lambda request: httpx2.Response(200, content=json.dumps(["not", "a", "document"]))})
    provider = build(settings("corp", issuer="https://idp.example.com"), CALLBACK, api.transport)
    with pytest.raises(ProviderError, match="discovery document"):
        await provider.endpoints()


# -- Apple ------------------------------------------------------------------------------------


APPLE_TEAM_KEY = ECKey.generate_key("P-256", private=True)


def apple_settings(**fields: str) -> OAuthProviderSettings:
    pem = APPLE_TEAM_KEY.as_pem(private=True).decode().replace("\n", "\\n")  # as one .env line holds it
    return OAuthProviderSettings(name="apple", **({"client_id": "com.example.web", "team_id": "TEAM123456",
                                                   "key_id": "KEY1234567", "private_key": pem} | fields))


def apple_api(signing: RSAKey, id_token: str | Callable[[], str]) -> FakeProviderAPI:
    """Apple's discovery document, keys and token endpoint (https://appleid.apple.com), as documented."""
    def token(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"access_token": "a1b2c3", "token_type": "Bearer", "expires_in": 3600,
                                          "refresh_token": "r1b2c3",
                                          "id_token": id_token() if callable(id_token) else id_token})
    return FakeProviderAPI({
        "https://appleid.apple.com/.well-known/openid-configuration": answer({
            "issuer": "https://appleid.apple.com", "authorization_endpoint": "https://appleid.apple.com/auth/authorize",
            "token_endpoint": "https://appleid.apple.com/auth/token", "jwks_uri": "https://appleid.apple.com/auth/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
        }),
        "https://appleid.apple.com/auth/keys": answer(KeySet([signing]).as_dict(private=False)),
        "https://appleid.apple.com/auth/token": token,
    })


def apple_id_token(signing: RSAKey, nonce: str | None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "https://appleid.apple.com", "aud": "com.example.web", "sub": "001234.abcdef.0987", "iat": now,
            "exp": now + 600, "email": "x7k2@privaterelay.appleid.com", "email_verified": "true",
            "is_private_email": "true", **({"nonce": nonce} if nonce else {})} | claims
    return jwt.encode({"alg": "RS256", "kid": signing.kid}, body, signing)


async def test_apple_sign_in_contract() -> None:
    signing = RSAKey.generate_key(2048, parameters={"kid": "apple-1"})
    api = apple_api(signing, lambda: apple_id_token(signing, "the-nonce"))
    provider = build(apple_settings(), CALLBACK, api.transport)
    url = await provider.authorization_url(state="st", nonce="the-nonce", verifier="v" * 50, scopes=None, extra={})
    assert url.startswith("https://appleid.apple.com/auth/authorize?")
    assert "scope=name%20email" in url and "+" not in url.partition("?")[2]
    sent = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert sent["response_mode"] == "form_post" and sent["nonce"] == "the-nonce"
    assert "code_challenge" not in sent  # Apple takes no PKCE
    tokens = await provider.exchange("apple-code", "v" * 50)
    form = {k: v[0] for k, v in parse_qs(api.seen[-1].content.decode()).items()}
    assert form["client_id"] == "com.example.web" and "code_verifier" not in form
    secret = jwt.decode(form["client_secret"], APPLE_TEAM_KEY)
    assert secret.header["kid"] == "KEY1234567" and secret.header["alg"] == "ES256"
    assert secret.claims["iss"] == "TEAM123456" and secret.claims["sub"] == "com.example.web"
    assert secret.claims["aud"] == "https://appleid.apple.com" and secret.claims["exp"] - secret.claims["iat"] == 3600
    posted = {"user": json.dumps({"name": {"firstName": "Ada", "lastName": "Lovelace"}, "email": "forged@evil.test"})}
    found = await provider.identity(tokens, "the-nonce", posted)
    assert found.subject == "001234.abcdef.0987" and found.email == "x7k2@privaterelay.appleid.com"
    assert found.email_verified is True  # Apple's "true" string
    assert found.data["full_name"] == "Ada Lovelace"  # the name from the form; the address only from the token
    wrong = await provider.identity(tokens, "the-nonce", {"user": "{not json"})
    assert "full_name" not in wrong.data


async def test_apple_id_tokens_from_either_issuer_and_not_others() -> None:
    signing = RSAKey.generate_key(2048, parameters={"kid": "apple-1"})
    provider = build(apple_settings(), CALLBACK, apple_api(signing, "").transport)
    for issuer in ("https://appleid.apple.com", "https://account.apple.com"):
        token = apple_id_token(signing, "n", iss=issuer)
        assert (await provider.verify_id_token(token, "n", nonce_hashed=False)).subject == "001234.abcdef.0987"
    with pytest.raises(ProviderError, match="issued by"):
        await provider.verify_id_token(apple_id_token(signing, "n", iss="https://evil.example"), "n", nonce_hashed=False)


def test_apple_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="go together"):
        build(apple_settings(key_id=""), CALLBACK)
    with pytest.raises(ConfigError, match="are required"):
        build(OAuthProviderSettings(name="apple", client_id="com.example.web"), CALLBACK)
    with pytest.raises(ConfigError, match="neither a PEM key nor a readable file"):
        build(apple_settings(private_key="/nonexistent/AuthKey.p8"), CALLBACK)
    rsa_pem = RSAKey.generate_key(2048).as_pem(private=True).decode()
    with pytest.raises(ConfigError, match="EC private key|P-256"):
        build(apple_settings(private_key=rsa_pem), CALLBACK)
    # a ready-made client secret is used as it is
    ready = build(OAuthProviderSettings(name="apple", client_id="com.example.web", client_secret="made.by.hand"),
                  CALLBACK)
    assert ready.client_secret() == "made.by.hand"


def test_apple_key_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "AuthKey_KEY1234567.p8"
    key_file.write_bytes(APPLE_TEAM_KEY.as_pem(private=True))
    provider = build(apple_settings(private_key=str(key_file)), CALLBACK)
    assert jwt.decode(str(provider.client_secret()), APPLE_TEAM_KEY).claims["iss"] == "TEAM123456"
