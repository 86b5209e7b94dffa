"""The sign-in providers: each configured one, and what Gatehouse knows of the built-in ones.

A provider is configured by ``GATEHOUSE_OAUTH_<NAME>_*`` (core/config.py). Its NAME is what the
clients pass as ``provider=``. Two kinds:

- **OpenID Connect**, configured from its issuer's discovery document: any name with ``_ISSUER``
  (``keycloak`` is the upstream server's generic one, and supabase-py accepts only upstream
  names), and the built-in ``google``, ``azure`` (Microsoft; ``_TENANT``) and ``gitlab`` (``_URL``
  for a self-hosted GitLab). Who signed in is read from the ID token, verified (idtoken.py), and
  the userinfo endpoint when the token lacks the email.
- **OAuth 2.0 with an API for the profile**: ``github`` (the primary verified address from the
  emails API; ``_URL`` for GitHub Enterprise) and ``discord``.

The OAuth 2.0 exchanges go through Authlib's client; ID tokens through joserfc.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from gatehouse.auth.oauth import idtoken
from gatehouse.core.config import ConfigError, OAuthProviderSettings

#: Seconds a call to a provider may take.
TIMEOUT = 10.0
#: How long a discovery document and key set are kept before they are fetched again.
DISCOVERY_TTL = 3600.0
#: An ID token signed by a key not in the cached set refetches the set, at most this often.
JWKS_REFETCH_AFTER = 60.0
#: Largest answer read from a provider (profile, keys, tokens).
MAX_RESPONSE_BYTES = 1_048_576


class ProviderError(Exception):
    """The provider refused or failed; the message is safe to show the person signing in."""


@dataclass(frozen=True)
class ProviderTokens:
    access_token: str
    refresh_token: str | None = None
    id_token: str | None = None


@dataclass(frozen=True)
class ProviderIdentity:
    """Who signed in at a provider: their id there, their address if any, and the identity data
    stored with the identity (the upstream server's shape: ``sub``, ``email``, ``name``, ...)."""

    subject: str
    email: str | None
    email_verified: bool
    data: dict[str, Any]


def identity_data(provider_issuer: str, subject: str, email: str | None, verified: bool,
                  **profile: Any) -> dict[str, Any]:
    """The identity's data as the upstream server stores it, empty values left out."""
    data: dict[str, Any] = {
        "iss": provider_issuer, "sub": subject, "provider_id": subject,
        "email": email, "email_verified": verified, "phone_verified": False,
        **profile,
    }
    return {key: value for key, value in data.items() if value not in (None, "")}


class Provider:
    """One configured provider: the redirect, the code exchange, and who signed in."""

    #: Scopes asked for when the settings name none.
    default_scopes = ""
    #: How the provider sends the browser back: None (a GET with the code) or ``form_post``.
    response_mode: str | None = None
    #: Whether ID tokens from it can sign in directly (``grant_type=id_token``).
    accepts_id_tokens = False
    #: Whether it takes PKCE (Apple does not).
    uses_pkce = True
    #: How the client authenticates at the token endpoint, when it has a secret.
    secret_method = "client_secret_basic"

    def __init__(self, settings: OAuthProviderSettings, redirect_uri: str, transport: httpx2.AsyncBaseTransport | None) -> None:
        self.settings = settings
        self.name = settings.name
        self.redirect_uri = redirect_uri
        self.transport = transport
        if not settings.client_ids:
            raise ConfigError(f"GATEHOUSE_OAUTH_{self.name.upper()}_CLIENT_ID is required to sign in with {self.name}")

    @property
    def client_id(self) -> str:
        return self.settings.client_ids[0]

    def scopes(self, asked: str | None) -> str:
        """The configured scopes (or the defaults) plus any the client asked for."""
        base = (self.settings.scopes or self.default_scopes).replace(",", " ").split()
        extra = (asked or "").replace(",", " ").split()
        return " ".join(dict.fromkeys([*base, *extra]))

    def client_secret(self) -> str | None:
        return self.settings.client_secret or None

    def client(self) -> AsyncOAuth2Client:
        secret = self.client_secret()
        return AsyncOAuth2Client(
            self.client_id, secret, redirect_uri=self.redirect_uri,
            code_challenge_method="S256" if self.uses_pkce else None, timeout=TIMEOUT, transport=self.transport,
            token_endpoint_auth_method=self.secret_method if secret else "none",
        )

    async def endpoints(self) -> tuple[str, str]:
        """The authorization and token endpoints."""
        raise NotImplementedError

    async def authorization_url(self, *, state: str, nonce: str, verifier: str, scopes: str | None,
                                extra: Mapping[str, str]) -> str:
        authorize, _ = await self.endpoints()
        params: dict[str, str] = {**extra, "nonce": nonce}
        if self.response_mode:
            params["response_mode"] = self.response_mode
        async with self.client() as client:
            url, _ = client.create_authorization_url(
                authorize, state=state, code_verifier=verifier if self.uses_pkce else None, scope=self.scopes(scopes),
                **params,
            )
        return str(url)

    async def exchange(self, code: str, verifier: str) -> ProviderTokens:
        """Trade the code the provider sent back (with our PKCE verifier) for its tokens."""
        _, token_url = await self.endpoints()
        async with self.client() as client:
            try:
                token = await client.fetch_token(
                    token_url, code=code, headers={"Accept": "application/json"},
                    **({"code_verifier": verifier} if self.uses_pkce else {}),
                )
            except OAuthError as exc:
                raise ProviderError(f"{self.name} refused the code: {exc.description or exc.error}") from None
            except (httpx2.HTTPError, ValueError) as exc:
                raise ProviderError(f"{self.name} could not be reached to finish the sign-in: {exc}") from None
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise ProviderError(f"{self.name} answered the code without an access token")
        return ProviderTokens(access, token.get("refresh_token") or None, token.get("id_token") or None)

    async def identity(self, tokens: ProviderTokens, nonce: str, posted: Mapping[str, str] | None = None
                       ) -> ProviderIdentity:
        """Who signed in. ``posted``: what the provider's redirect back carried besides the code."""
        raise NotImplementedError

    async def verify_id_token(self, token: str, nonce: str | None, *, nonce_hashed: bool,
                              access_token: str | None = None) -> ProviderIdentity:
        raise ProviderError(f"{self.name} does not sign in with ID tokens")

    async def get_json(self, url: str, access_token: str) -> Any:
        """A JSON document from the provider's API, read with the user's access token."""
        async with httpx2.AsyncClient(timeout=TIMEOUT, transport=self.transport) as client:
            try:
                response = await client.get(url, headers={"Authorization": f"Bearer {access_token}",
                                                          "Accept": "application/json"})
            except httpx2.HTTPError as exc:
                raise ProviderError(f"{self.name} could not be reached for the profile: {exc}") from None
        if response.status_code != 200 or len(response.content) > MAX_RESPONSE_BYTES:
            raise ProviderError(f"{self.name} answered {response.status_code} for the profile")
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"{self.name} answered the profile with something that is not JSON") from None


@dataclass
class _Discovered:
    document: dict[str, Any]
    keys: KeySet
    fetched: float
    keys_fetched: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OIDCProvider(Provider):
    """An OpenID Connect provider, set up from ``{issuer}/.well-known/openid-configuration``."""

    default_scopes = "openid email profile"
    accepts_id_tokens = True

    def __init__(self, settings: OAuthProviderSettings, redirect_uri: str, transport: httpx2.AsyncBaseTransport | None,
                 issuer: str | None = None) -> None:
        super().__init__(settings, redirect_uri, transport)
        self.issuer = (issuer or settings.issuer).rstrip("/")
        parts = urlsplit(self.issuer)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"GATEHOUSE_OAUTH_{self.name.upper()}_ISSUER must be the issuer's URL, e.g. "
                              "https://idp.example.com/realms/main")
        self._discovered: _Discovered | None = None

    def issuer_matches(self, iss: str, claims: dict[str, Any]) -> bool:
        return iss.rstrip("/") == self.issuer

    def email_verified(self, claims: Mapping[str, Any]) -> bool:
        verified = claims.get("email_verified")
        return verified is True or (isinstance(verified, str) and verified.lower() == "true")

    async def _discover(self) -> _Discovered:
        found = self._discovered
        if found is not None and time.monotonic() - found.fetched < DISCOVERY_TTL:
            return found
        url = f"{self.issuer}/.well-known/openid-configuration"
        async with httpx2.AsyncClient(timeout=TIMEOUT, transport=self.transport) as client:
            try:
                response = await client.get(url)
                document = response.json() if response.status_code == 200 else None
                if not isinstance(document, dict) or not isinstance(document.get("jwks_uri"), str):
                    raise ProviderError(f"{self.name}'s discovery document at {url} could not be read")
                keys = await self._fetch_keys(client, document["jwks_uri"])
            except (httpx2.HTTPError, ValueError) as exc:
                raise ProviderError(f"{self.name}'s discovery document at {url} could not be read: {exc}") from None
        now = time.monotonic()
        self._discovered = _Discovered(document, keys, now, now)
        return self._discovered

    async def _fetch_keys(self, client: httpx2.AsyncClient, url: str) -> KeySet:
        response = await client.get(url)
        if response.status_code != 200 or len(response.content) > MAX_RESPONSE_BYTES:
            raise ProviderError(f"{self.name}'s signing keys at {url} could not be read")
        try:
            return KeySet.import_key_set(response.json())
        except Exception as exc:  # noqa: BLE001 - any malformed key set is the provider's fault, said plainly
            raise ProviderError(f"{self.name}'s signing keys at {url} could not be read: {exc}") from None

    async def _keys_for(self, token: str) -> KeySet:
        """The issuer's keys, fetched again (at most once a minute) if the token's kid is not among them."""
        found = await self._discover()
        kid = idtoken.header_kid(token)
        if kid is None or any(key.kid == kid for key in found.keys.keys):
            return found.keys
        async with found.lock:
            if time.monotonic() - found.keys_fetched >= JWKS_REFETCH_AFTER:
                async with httpx2.AsyncClient(timeout=TIMEOUT, transport=self.transport) as client:
                    try:
                        found.keys = await self._fetch_keys(client, found.document["jwks_uri"])
                    except httpx2.HTTPError as exc:
                        raise ProviderError(f"{self.name}'s signing keys could not be read: {exc}") from None
                found.keys_fetched = time.monotonic()
        return found.keys

    async def endpoints(self) -> tuple[str, str]:
        document = (await self._discover()).document
        authorize, token = document.get("authorization_endpoint"), document.get("token_endpoint")
        if not isinstance(authorize, str) or not isinstance(token, str):
            raise ProviderError(f"{self.name}'s discovery document names no authorization or token endpoint")
        return authorize, token

    async def claims(self, token: str, nonce: str | None, *, nonce_hashed: bool) -> dict[str, Any]:
        keys = await self._keys_for(token)
        try:
            return idtoken.verify(token, keys, issuer=self.issuer_matches, audiences=self.settings.client_ids,
                                  nonce=nonce, nonce_hashed=nonce_hashed)
        except idtoken.InvalidIDToken as exc:
            raise ProviderError(str(exc)) from None

    def to_identity(self, claims: Mapping[str, Any]) -> ProviderIdentity:
        subject = str(claims["sub"])
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        verified = bool(email) and self.email_verified(claims)
        profile = {
            "name": claims.get("name"), "full_name": claims.get("name"),
            "avatar_url": claims.get("picture"), "picture": claims.get("picture"),
            "preferred_username": claims.get("preferred_username"), "nickname": claims.get("nickname"),
        }
        return ProviderIdentity(subject, email.lower() if email else None, verified,
                                identity_data(str(claims.get("iss", self.issuer)), subject, email, verified, **profile))

    async def with_userinfo(self, claims: dict[str, Any], access_token: str | None) -> dict[str, Any]:
        """The ID token's claims, completed from the userinfo endpoint when they lack the address
        (conformant providers put it there only). Userinfo counts only for the token's own subject."""
        if claims.get("email") or not access_token:
            return claims
        userinfo_url = (await self._discover()).document.get("userinfo_endpoint")
        if not isinstance(userinfo_url, str):
            return claims
        info = await self.get_json(userinfo_url, access_token)
        if not isinstance(info, dict) or str(info.get("sub")) != str(claims["sub"]):
            return claims
        return {**info, **claims, "email": info.get("email"), "email_verified": info.get("email_verified")}

    async def identity(self, tokens: ProviderTokens, nonce: str, posted: Mapping[str, str] | None = None
                       ) -> ProviderIdentity:
        if tokens.id_token is None:
            raise ProviderError(f"{self.name} sent no ID token; is the openid scope configured?")
        claims = await self.claims(tokens.id_token, nonce, nonce_hashed=False)
        return self.to_identity(await self.with_userinfo(claims, tokens.access_token))

    async def verify_id_token(self, token: str, nonce: str | None, *, nonce_hashed: bool,
                              access_token: str | None = None) -> ProviderIdentity:
        claims = await self.claims(token, nonce, nonce_hashed=nonce_hashed)
        return self.to_identity(await self.with_userinfo(claims, access_token))


class AzureProvider(OIDCProvider):
    """Microsoft Entra ID. With the ``common``, ``organizations`` or ``consumers`` endpoints the
    ID token names the user's own tenant as its issuer; and Microsoft does not verify the ``email``
    claim, so an address counts as verified only with ``xms_edov`` (the domain's owner vouches)."""

    SHARED_TENANTS = ("common", "organizations", "consumers")

    def __init__(self, settings: OAuthProviderSettings, redirect_uri: str, transport: httpx2.AsyncBaseTransport | None) -> None:
        tenant = settings.tenant or "common"
        base = (settings.url or "https://login.microsoftonline.com").rstrip("/")
        super().__init__(settings, redirect_uri, transport, issuer=settings.issuer or f"{base}/{tenant}/v2.0")
        self.base = base
        self.shared = tenant in self.SHARED_TENANTS and not settings.issuer

    def issuer_matches(self, iss: str, claims: dict[str, Any]) -> bool:
        if not self.shared:
            return super().issuer_matches(iss, claims)
        tid = claims.get("tid")
        return isinstance(tid, str) and iss.rstrip("/") == f"{self.base}/{tid}/v2.0"

    def email_verified(self, claims: Mapping[str, Any]) -> bool:
        edov = claims.get("xms_edov")
        return edov is True or edov in ("1", "true", 1)


class AppleProvider(OIDCProvider):
    """Sign in with Apple: OpenID Connect with Apple's quirks.

    - The browser comes back with a cross-site POST (``response_mode=form_post``, which Apple
      requires when asking for the name or address), carrying the person's name (``user``) the
      first time only; the name is taken from there, the address only from the ID token.
    - The client secret is a JWT (ES256) signed with the team's key: made here from ``_TEAM_ID``,
      ``_KEY_ID`` and ``_PRIVATE_KEY``, valid an hour and made again before it ends (or given ready
      made as ``_CLIENT_SECRET``). Apple takes it in the form (``client_secret_post``).
    - No PKCE; ``email_verified`` may be the string ``"true"``; ID tokens may name either of
      Apple's issuers.
    """

    ISSUERS = ("https://appleid.apple.com", "https://account.apple.com")
    AUDIENCE = "https://appleid.apple.com"
    default_scopes = "name email"
    response_mode = "form_post"
    uses_pkce = False
    secret_method = "client_secret_post"
    SECRET_LIFETIME = 3600

    def __init__(self, settings: OAuthProviderSettings, redirect_uri: str, transport: httpx2.AsyncBaseTransport | None) -> None:
        super().__init__(settings, redirect_uri, transport, issuer=settings.issuer or self.ISSUERS[0])
        self._key: ECKey | None = None
        if settings.team_id or settings.key_id or settings.private_key:
            if not (settings.team_id and settings.key_id and settings.private_key):
                raise ConfigError(f"GATEHOUSE_OAUTH_{self.name.upper()}_TEAM_ID, _KEY_ID and _PRIVATE_KEY go together: "
                                  "Apple's client secret is signed with that key")
            self._key = _apple_key(settings.private_key, self.name)
        elif not settings.client_secret:
            raise ConfigError(f"GATEHOUSE_OAUTH_{self.name.upper()}_TEAM_ID, _KEY_ID and _PRIVATE_KEY are required to "
                              "sign in with Apple (or a ready-made client secret JWT as _CLIENT_SECRET)")
        self._secret: tuple[str, float] | None = None

    def issuer_matches(self, iss: str, claims: dict[str, Any]) -> bool:
        return iss.rstrip("/") in self.ISSUERS

    def client_secret(self) -> str | None:
        if self._key is None:
            return self.settings.client_secret or None
        now = time.time()
        if self._secret is None or self._secret[1] - now < self.SECRET_LIFETIME / 4:
            claims = {"iss": self.settings.team_id, "iat": int(now), "exp": int(now) + self.SECRET_LIFETIME,
                      "aud": self.AUDIENCE, "sub": self.client_id}
            token = jwt.encode({"alg": "ES256", "kid": self.settings.key_id}, claims, self._key)
            self._secret = (token, now + self.SECRET_LIFETIME)
        return self._secret[0]

    async def authorization_url(self, **kwargs: Any) -> str:
        # Apple wants the scopes' spaces as %20, not +.
        url = await super().authorization_url(**kwargs)
        base, _, query = url.partition("?")
        return f"{base}?{query.replace('+', '%20')}"

    async def identity(self, tokens: ProviderTokens, nonce: str, posted: Mapping[str, str] | None = None
                       ) -> ProviderIdentity:
        found = await super().identity(tokens, nonce)
        name = _apple_name((posted or {}).get("user"))
        if not name:
            return found
        return ProviderIdentity(found.subject, found.email, found.email_verified,
                                found.data | {"name": name, "full_name": name})


def _apple_key(value: str, name: str) -> ECKey:
    """The P-256 key from PEM text (``\\n`` for line breaks allowed) or the path of Apple's .p8 file."""
    text = value.replace("\\n", "\n").strip()
    if not text.startswith("-----BEGIN"):
        try:
            text = Path(text).expanduser().read_text()
        except OSError as exc:
            raise ConfigError(f"GATEHOUSE_OAUTH_{name.upper()}_PRIVATE_KEY: neither a PEM key nor a readable "
                              f"file: {exc}") from None
    try:
        key = ECKey.import_key(text)
    except Exception:  # noqa: BLE001 - any unreadable key is a configuration error, said plainly
        raise ConfigError(f"GATEHOUSE_OAUTH_{name.upper()}_PRIVATE_KEY is not an EC private key (Apple's .p8)") from None
    if not key.is_private or key.curve_name != "P-256":
        raise ConfigError(f"GATEHOUSE_OAUTH_{name.upper()}_PRIVATE_KEY must be a P-256 private key (Apple's .p8)")
    return key


def _apple_name(user: str | None) -> str:
    """The name in the ``user`` field Apple posts the first time (``{"name": {"firstName", "lastName"}}``)."""
    if not user or len(user) > 4096:
        return ""
    try:
        parsed = json.loads(user)
    except ValueError:
        return ""
    name = parsed.get("name") if isinstance(parsed, dict) else None
    if not isinstance(name, dict):
        return ""
    parts = [name.get("firstName"), name.get("lastName")]
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())[:200]


class GitHubProvider(Provider):
    """GitHub: OAuth 2.0 and its REST API. The address is the account's primary one, and
    verified only if GitHub says so (the ``user:email`` scope reads it)."""

    default_scopes = "read:user user:email"

    def __init__(self, settings: OAuthProviderSettings, redirect_uri: str, transport: httpx2.AsyncBaseTransport | None) -> None:
        super().__init__(settings, redirect_uri, transport)
        base = (settings.url or "https://github.com").rstrip("/")
        self.web = base
        self.api = "https://api.github.com" if base == "https://github.com" else f"{base}/api/v3"

    async def endpoints(self) -> tuple[str, str]:
        return f"{self.web}/login/oauth/authorize", f"{self.web}/login/oauth/access_token"

    async def identity(self, tokens: ProviderTokens, nonce: str, posted: Mapping[str, str] | None = None
                       ) -> ProviderIdentity:
        user = await self.get_json(f"{self.api}/user", tokens.access_token)
        emails = await self.get_json(f"{self.api}/user/emails", tokens.access_token)
        if not isinstance(user, dict) or user.get("id") is None:
            raise ProviderError("GitHub's profile names no user id")
        primary = next((e for e in emails if isinstance(e, dict) and e.get("primary")), None) if isinstance(emails, list) else None
        email = primary.get("email") if primary and isinstance(primary.get("email"), str) else None
        verified = bool(email) and primary is not None and primary.get("verified") is True
        subject = str(user["id"])
        profile = {
            "name": user.get("name"), "full_name": user.get("name"), "avatar_url": user.get("avatar_url"),
            "user_name": user.get("login"), "preferred_username": user.get("login"),
        }
        return ProviderIdentity(subject, email.lower() if email else None, verified,
                                identity_data(self.api, subject, email, verified, **profile))


class DiscordProvider(Provider):
    """Discord: OAuth 2.0 and ``/users/@me``, whose ``verified`` says whether the address is."""

    default_scopes = "identify email"
    API = "https://discord.com/api"

    async def endpoints(self) -> tuple[str, str]:
        return "https://discord.com/oauth2/authorize", f"{self.API}/oauth2/token"

    async def identity(self, tokens: ProviderTokens, nonce: str, posted: Mapping[str, str] | None = None
                       ) -> ProviderIdentity:
        user = await self.get_json(f"{self.API}/users/@me", tokens.access_token)
        if not isinstance(user, dict) or not user.get("id"):
            raise ProviderError("Discord's profile names no user id")
        subject = str(user["id"])
        email = user.get("email") if isinstance(user.get("email"), str) else None
        verified = bool(email) and user.get("verified") is True
        avatar = user.get("avatar")
        avatar_url = f"https://cdn.discordapp.com/avatars/{subject}/{avatar}.png" if isinstance(avatar, str) else None
        name = user.get("global_name") or user.get("username")
        profile = {"name": name, "full_name": name, "avatar_url": avatar_url, "picture": avatar_url,
                   "user_name": user.get("username"), "preferred_username": user.get("username")}
        return ProviderIdentity(subject, email.lower() if email else None, verified,
                                identity_data(self.API, subject, email, verified, **profile))


#: The providers Gatehouse knows by name, and how to build each from its settings.
def _google(s: OAuthProviderSettings, uri: str, t: httpx2.AsyncBaseTransport | None) -> Provider:
    return OIDCProvider(s, uri, t, issuer=s.issuer or "https://accounts.google.com")


def _gitlab(s: OAuthProviderSettings, uri: str, t: httpx2.AsyncBaseTransport | None) -> Provider:
    return OIDCProvider(s, uri, t, issuer=s.issuer or (s.url or "https://gitlab.com"))


BUILT_IN = {
    "apple": AppleProvider,
    "google": _google,
    "gitlab": _gitlab,
    "azure": AzureProvider,
    "github": GitHubProvider,
    "discord": DiscordProvider,
}


def build(settings: OAuthProviderSettings, redirect_uri: str, transport: httpx2.AsyncBaseTransport | None = None) -> Provider:
    """The provider a name's settings describe; raises ConfigError naming what is missing."""
    make = BUILT_IN.get(settings.name)
    if make is not None:
        return make(settings, redirect_uri, transport)
    if not settings.issuer:
        raise ConfigError(
            f"GATEHOUSE_OAUTH_{settings.name.upper()}_ISSUER is required: {settings.name} is not a built-in provider "
            f"({', '.join(sorted(BUILT_IN))}), so it signs in through OpenID Connect from its issuer's discovery document"
        )
    return OIDCProvider(settings, redirect_uri, transport)


class Providers:
    """The enabled providers, by name, built once at start."""

    def __init__(self, configured: Mapping[str, OAuthProviderSettings], redirect_uri: str,
                 transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.redirect_uri = redirect_uri
        self._by_name = {name: build(s, redirect_uri, transport) for name, s in configured.items() if s.enabled}

    def get(self, name: str) -> Provider | None:
        return self._by_name.get(name.strip().lower())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_name))


__all__ = ["BUILT_IN", "Provider", "ProviderError", "ProviderIdentity", "ProviderTokens", "Providers", "build"]
