"""Signing in with another provider: the redirect, the callback, ID tokens, linking.

``start`` (``GET /authorize``): a state row, then the provider's authorization URL. The state
sent through the provider is random and single use, lives ten minutes, and is bound to the
browser that asked: its binding cookie (HttpOnly, set by the API's origin on that same answer)
must come back with the callback. PKCE protects the code toward the provider, and an OIDC nonce
ties the ID token to this sign-in.

``finish`` (``GET``/``POST /callback``): the state row is consumed first (a replayed or forged
state finds nothing), then the code is exchanged and the identity read; the account comes from
accounts.sign_in (or accounts.link when a signed-in user asked to link). A client that sent a
PKCE challenge gets an auth code for ``grant_type=pkce``; otherwise the session itself goes back
in the URL's fragment. Every outcome, refusals included, goes back to ``redirect_to``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gatehouse.auth import users
from gatehouse.auth.flows.base import Client, Flow, pkce
from gatehouse.auth.forms import PKCE, IdTokenGrant
from gatehouse.auth.models import AuthCode, Session
from gatehouse.auth.oauth import accounts
from gatehouse.auth.oauth.providers import Provider, ProviderError, ProviderIdentity, Providers, ProviderTokens
from gatehouse.auth.tokens import sha256_hex
from gatehouse.core.errors import GatehouseError

STATE_LIFETIME = timedelta(minutes=10)
#: The binding cookie's value: 32 random bytes, URL-safe base64.
_BINDING = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: Query parameters of /authorize that Gatehouse sets toward the provider itself: never forwarded.
RESERVED = frozenset({
    "provider", "scopes", "redirect_to", "code_challenge", "code_challenge_method", "skip_http_redirect",
    "state", "nonce", "redirect_uri", "response_type", "client_id", "client_secret", "response_mode",
    "scope", "code_verifier", "invite_token", "apikey",
})
MAX_FORWARDED = 16
MAX_FORWARDED_LENGTH = 512


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the binding cookie's value to set on that answer.
    ``cross_site``: the provider comes back with a cross-site POST (form_post), so the cookie must
    be sent on one (SameSite=None)."""

    url: str
    binding: str
    cross_site: bool = False


@dataclass(frozen=True)
class Finished:
    """Where the browser goes back to, and with what: an auth code, a session, or a refusal."""

    redirect_to: str
    outcome: AuthCode | Session | GatehouseError
    provider_tokens: ProviderTokens | None = None


def bad_state(message: str) -> GatehouseError:
    return GatehouseError("bad_oauth_state", message, status=400)


def forwarded(params: Mapping[str, str]) -> dict[str, str]:
    """The extra query parameters a client asked to pass to the provider (``queryParams``:
    ``prompt``, ``login_hint``, ``access_type``...), without those Gatehouse controls."""
    extra = {k: v for k, v in params.items() if k.lower() not in RESERVED}
    if len(extra) > MAX_FORWARDED or any(len(k) + len(v) > MAX_FORWARDED_LENGTH for k, v in extra.items()):
        raise GatehouseError("validation_failed", f"At most {MAX_FORWARDED} extra query parameters of up to "
                             f"{MAX_FORWARDED_LENGTH} characters may be passed to the provider", status=400)
    return extra


class OAuthFlow(Flow):
    @property
    def providers(self) -> Providers:
        return self.deps.providers

    def provider(self, name: str | None) -> Provider:
        found = self.providers.get(name or "")
        if found is None:
            enabled = ", ".join(self.providers.names) or "none"
            raise GatehouseError(
                "validation_failed",
                f"Unsupported provider: Provider {name or ''} could not be found (enabled: {enabled})", status=400,
            )
        return found

    async def start(
        self, *, provider: str | None, redirect_to: str | None, scopes: str | None, form: PKCE,
        extra: Mapping[str, str], binding: str | None, client: Client, link_claims: dict[str, Any] | None = None,
        bind: bool = True,
    ) -> Started:
        """The provider's URL for this sign-in (or link: ``link_claims``), its state row written.

        ``bind``: the state must come back with the browser's binding cookie. Only a link started by
        a client's ``fetch`` (``linkIdentity``: the answer's cookie never reaches the browser that
        will open the URL) goes unbound; it is still single use, short-lived and tied to the user.
        """
        chosen = self.provider(provider)
        challenge = pkce(form, "oauth")
        await self.limit(f"oauth:{client.ip}", self.limits.token)
        link_user: uuid.UUID | None = None
        if link_claims is not None:
            if not self.settings.manual_linking:
                raise GatehouseError("manual_linking_disabled", "Manual linking is disabled", status=404)
            link_user = (await self.signed_in(link_claims))["id"]
        binding = binding if binding and _BINDING.match(binding) else secrets.token_urlsafe(32)
        state, verifier, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(48), secrets.token_urlsafe(24)
        url = await self._authorization_url(chosen, state=state, nonce=nonce, verifier=verifier, scopes=scopes,
                                            extra=forwarded(extra))
        await self.db.admin.execute(
            """
            WITH expired AS (DELETE FROM auth.oauth_states WHERE expires_at < now())
            INSERT INTO auth.oauth_states (state_hash, binding_hash, provider, redirect_to, code_challenge,
                                           code_challenge_method, provider_code_verifier, nonce, link_user_id,
                                           expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))
            """,
            sha256_hex(state), sha256_hex(binding) if bind else None, chosen.name, self.deps.redirects.allowed(redirect_to),
            challenge.challenge if challenge else None, challenge.challenge_method if challenge else None,
            verifier, nonce, link_user, STATE_LIFETIME.total_seconds(),
        )
        return Started(url, binding, cross_site=chosen.response_mode == "form_post")

    async def _authorization_url(self, chosen: Provider, **kwargs: Any) -> str:
        try:
            return await chosen.authorization_url(**kwargs)
        except ProviderError as exc:
            raise GatehouseError("unexpected_failure", str(exc), status=502) from None

    async def finish(self, params: Mapping[str, str], binding: str | None, client: Client) -> Finished:
        """The callback: always a Finished (refusals included), never an exception for the browser."""
        site = self.deps.redirects.site_url
        state = params.get("state") or ""
        if not state:
            return Finished(site, GatehouseError("bad_oauth_callback", "OAuth state parameter missing", status=400))
        if len(state) > 256:
            return Finished(site, bad_state("OAuth state parameter is invalid"))
        row = await self.db.admin.fetchrow("DELETE FROM auth.oauth_states WHERE state_hash = $1 RETURNING *",
                                           sha256_hex(state))
        if row is None:
            return Finished(site, bad_state("OAuth state not found or already used; start the sign-in again"))
        target: str = row["redirect_to"]
        if row["expires_at"] < datetime.now(UTC):
            return Finished(target, bad_state("OAuth state has expired; start the sign-in again"))
        bound = row["binding_hash"] is not None
        if bound and (not binding or not hmac.compare_digest(sha256_hex(binding), row["binding_hash"])):
            return Finished(target, bad_state(
                "This sign-in was started in another browser (or its cookie was lost); start it again here"))
        if params.get("error"):
            error = GatehouseError(params["error"][:64], (params.get("error_description") or params["error"])[:512],
                                   status=403, oauth_error=params["error"][:64])
            return Finished(target, error)
        code = params.get("code") or ""
        if not code or len(code) > 2048:
            return Finished(target, GatehouseError("bad_oauth_callback", "OAuth callback with missing authorization "
                                                   "code", status=400))
        chosen = self.providers.get(row["provider"])
        if chosen is None:
            return Finished(target, GatehouseError("oauth_provider_not_supported",
                                                   f"Unsupported provider: {row['provider']} is not enabled", status=400))
        try:
            tokens = await chosen.exchange(code, row["provider_code_verifier"])
            identity = await chosen.identity(tokens, row["nonce"], params)
        except ProviderError as exc:
            return Finished(target, GatehouseError("unexpected_failure", str(exc), status=502))
        try:
            outcome = await self._account(chosen, identity, row, tokens, client)
        except GatehouseError as error:
            return Finished(target, error)
        return Finished(target, outcome, tokens)

    async def _account(self, chosen: Provider, identity: ProviderIdentity, row: asyncpg.Record, tokens: ProviderTokens,
                       client: Client) -> AuthCode | Session:
        async with self.db.admin.acquire() as conn, conn.transaction():
            if row["link_user_id"] is not None:
                user = await accounts.link(conn, row["link_user_id"], chosen.name, identity, ip=client.ip)
            else:
                user, _ = await accounts.sign_in(conn, chosen.name, identity,
                                                 allow_signup=not self.settings.disable_signup, ip=client.ip)
            if users.is_banned(user, datetime.now(UTC)):
                raise accounts.banned()
            if row["code_challenge"] is not None:
                code = secrets.token_urlsafe(32)
                await conn.execute(
                    """
                    INSERT INTO auth.flow_state (user_id, auth_code, code_challenge_method, code_challenge,
                                                 provider_type, authentication_method, auth_code_issued_at,
                                                 provider_access_token, provider_refresh_token)
                    VALUES ($1, $2, $3, $4, $5, 'oauth', now(), $6, $7)
                    """,
                    user["id"], sha256_hex(code), row["code_challenge_method"], row["code_challenge"], chosen.name,
                    tokens.access_token, tokens.refresh_token,
                )
                return AuthCode(code)
            return await self.deps.sessions.create(conn, user, method="oauth", ip=client.ip,
                                                   user_agent=client.user_agent)

    async def id_token(self, form: IdTokenGrant, client: Client) -> Session:
        """``grant_type=id_token``: sign in with an ID token a provider's own SDK obtained."""
        await self.limit(f"token:{client.ip}", self.limits.token)
        chosen = self.provider(form.provider)
        if not chosen.accepts_id_tokens:
            raise GatehouseError("validation_failed", f"{chosen.name} does not sign in with ID tokens", status=400)
        try:
            identity = await chosen.verify_id_token(form.id_token, form.nonce, nonce_hashed=True,
                                                    access_token=form.access_token)
        except ProviderError as exc:
            raise GatehouseError("bad_id_token", f"Bad ID token: {exc}", status=400) from None
        async with self.db.admin.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                """
                WITH expired AS (DELETE FROM auth.used_id_tokens WHERE expires_at < now())
                INSERT INTO auth.used_id_tokens (token_hash, expires_at)
                VALUES ($1, now() + interval '1 day') ON CONFLICT DO NOTHING RETURNING true
                """,
                sha256_hex(form.id_token),
            )
            if not fresh:
                raise GatehouseError("bad_id_token", "Bad ID token: it has already been used to sign in; "
                                     "get a new one from the provider", status=400)
            user, _ = await accounts.sign_in(conn, chosen.name, identity,
                                             allow_signup=not self.settings.disable_signup, ip=client.ip)
            if users.is_banned(user, datetime.now(UTC)):
                raise GatehouseError("user_banned", "User is banned", status=400)
            return await self.deps.sessions.create(conn, user, method="oauth", ip=client.ip,
                                                   user_agent=client.user_agent)

    async def unlink(self, claims: dict[str, Any], identity_id: str, client: Client) -> None:
        """``unlinkIdentity``: remove one of the signed-in user's identities (never the last)."""
        if not self.settings.manual_linking:
            raise GatehouseError("manual_linking_disabled", "Manual linking is disabled", status=404)
        try:
            wanted = uuid.UUID(identity_id)
        except ValueError:
            raise GatehouseError("identity_not_found", "Identity doesn't exist", status=404) from None
        user = await self.signed_in(claims)
        async with self.db.admin.acquire() as conn, conn.transaction():
            await accounts.unlink(conn, user["id"], wanted, ip=client.ip)


__all__ = ["STATE_LIFETIME", "Finished", "OAuthFlow", "Started", "forwarded"]
