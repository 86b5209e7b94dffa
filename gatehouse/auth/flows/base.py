"""What every auth flow shares: its dependencies, the rate limits, the PKCE flow state, and
the one path by which a one-time token and its email are made.

Each flow (``signup``, ``login``, ``verify``, ``recover``, ``account``, and the admin's) is a
``Flow`` over one ``Deps``. Every change and the email it needs commit in one transaction (the
outbox), and every rate limit is counted in PostgreSQL before the work starts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gatehouse.auth import links, users
from gatehouse.auth.devices import DeviceCookies
from gatehouse.auth.forms import PKCE, normalize_email
from gatehouse.auth.mfa.totp import SecretBox
from gatehouse.auth.oauth.providers import Providers
from gatehouse.auth.passwords import PasswordHasher, PasswordPolicy
from gatehouse.auth.sessions import Sessions
from gatehouse.auth.throttle import PasswordThrottle
from gatehouse.auth.tokens import AccessTokens, RefreshTokens
from gatehouse.core.config import Settings
from gatehouse.core.db import Conn, Database
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet
from gatehouse.core.ratelimit import Limit, RateLimiter, RateLimits
from gatehouse.mail.outbox import enqueue
from gatehouse.mail.render import Templates


@dataclass(frozen=True)
class Client:
    """Who is asking, as far as rate limits and the audit log care."""

    ip: str
    user_agent: str = ""


def invalid_credentials() -> GatehouseError:
    return GatehouseError("invalid_credentials", "Invalid login credentials", status=400)


def otp_expired() -> GatehouseError:
    return GatehouseError("otp_expired", "Email link is invalid or has expired", status=403)


def no_phone() -> GatehouseError:
    return GatehouseError("phone_provider_disabled", "Phone sign-in is not available on this server", status=422)


def pkce(form: PKCE, method: str) -> links.Flow | None:
    """The PKCE challenge a request carries, checked, for a flow row written later."""
    if not form.code_challenge:
        return None
    challenge_method = (form.code_challenge_method or "s256").lower()
    if challenge_method not in ("s256", "plain"):
        raise GatehouseError("validation_failed", "code_challenge_method must be s256 or plain", status=400)
    return links.Flow(challenge_method, form.code_challenge, method)


def callback_url(settings: Settings) -> str:
    """Where providers send the browser back: the API's public URL, then ``/auth/v1/callback``."""
    return f"{settings.public_api_url}/auth/v1/callback"


@dataclass(frozen=True)
class Deps:
    """The parts the flows are built from, made once per app."""

    db: Database
    settings: Settings
    hasher: PasswordHasher
    policy: PasswordPolicy
    limiter: RateLimiter
    devices: DeviceCookies
    throttle: PasswordThrottle
    templates: Templates
    redirects: links.Redirects
    sessions: Sessions
    providers: Providers
    secret_box: SecretBox

    @classmethod
    def build(cls, database: Database, settings: Settings, keys: KeySet, templates: Templates) -> Deps:
        limiter = RateLimiter(settings)
        devices = DeviceCookies(keys, settings)
        return cls(
            db=database,
            settings=settings,
            hasher=PasswordHasher(settings),
            policy=PasswordPolicy(settings),
            limiter=limiter,
            devices=devices,
            throttle=PasswordThrottle(limiter, database, devices, settings.password_slowdown_max),
            templates=templates,
            redirects=links.Redirects(settings),
            sessions=Sessions(
                AccessTokens(keys, settings), RefreshTokens(keys), settings.refresh_token_reuse_interval
            ),
            providers=Providers(settings.oauth_providers, callback_url(settings)),
            secret_box=SecretBox(keys),
        )


class Flow:
    """A flow's shared tools: limits, flow state, and issuing a token with its email."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.db = deps.db
        self.settings = deps.settings

    # -- limits -------------------------------------------------------------------------------

    async def limit(self, key: str, limit: Limit) -> None:
        await self.deps.limiter.hit(self.db.admin, key, limit)

    @property
    def limits(self) -> RateLimits:
        return self.deps.limiter.limits

    async def limit_address(self, address: str) -> None:
        limit = self.limits.email_address
        await self.deps.limiter.hit(
            self.db.admin,
            f"mail:{address}",
            limit,
            code="over_email_send_rate_limit",
            message=f"For security purposes, you can only request this after {limit.seconds} seconds.",
        )

    async def may_mail(self, address: str) -> bool:
        """The per-address mail limit, applied silently where a 429 would tell who has an account."""
        try:
            await self.limit_address(address)
        except GatehouseError:
            return False
        return True

    async def email_request(self, address: str | None, client: Client) -> str:
        """A request that mails an address: a valid address, within the IP and address limits."""
        email = normalize_email(address)
        assert email is not None
        await self.limit(f"email:{client.ip}", self.limits.email)
        await self.limit_address(email)
        return email

    # -- the signed-in user -------------------------------------------------------------------

    async def signed_in(self, claims: dict[str, Any]) -> asyncpg.Record:
        """The user row a verified access token names, if its session is still active."""
        try:
            user_id = uuid.UUID(str(claims.get("sub")))
        except ValueError:
            raise GatehouseError("bad_jwt", "invalid claim: sub claim must be a UUID", status=403) from None
        user = await users.by_id(self.db.admin, user_id)
        if user is None:
            raise GatehouseError("user_not_found", "User from sub claim in JWT does not exist", status=403)
        if not await Sessions.is_active(self.db.admin, claims.get("session_id"), str(user_id)):
            raise GatehouseError("session_not_found", "Session from session_id claim in JWT does not exist", status=403)
        if users.is_banned(user, datetime.now(UTC)):
            raise GatehouseError("user_banned", "User is banned", status=403)
        return user

    # -- mail ---------------------------------------------------------------------------------

    async def flow_state(self, conn: Conn, form: PKCE, method: str) -> uuid.UUID | None:
        flow = pkce(form, method)
        if flow is None:
            return None
        flow_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO auth.flow_state (code_challenge_method, code_challenge, authentication_method) "
            "VALUES ($1, $2, $3) RETURNING id",
            flow.challenge_method,
            flow.challenge,
            flow.authentication_method,
        )
        return flow_id

    async def send(
        self,
        conn: Conn,
        user: asyncpg.Record,
        *,
        kind: str,
        token_type: str,
        verify_type: str,
        to: str,
        redirect_to: str | None,
        flow_id: uuid.UUID | None = None,
        **context: Any,
    ) -> None:
        """Issue a one-time token and queue its email in the caller's transaction."""
        otp, link_token = await links.issue(
            conn, user_id=user["id"], token_type=token_type, address=to,
            expires_in=self.settings.otp_expiry, flow_state_id=flow_id,
        )
        action_url = self.deps.redirects.confirm_link(link_token, verify_type, redirect_to)
        context.setdefault("email", user["email"])
        message = self.deps.templates.message(
            kind, to, user_id=user["id"], action_url=action_url, token=otp, token_hash=link_token,
            link_type=verify_type, **context,
        )
        await enqueue(conn, message)

    async def send_confirmation(
        self, conn: Conn, user: asyncpg.Record, redirect_to: str | None, flow_id: uuid.UUID | None
    ) -> None:
        await self.send(
            conn, user, kind="confirmation", token_type="confirmation_token", verify_type="email",
            to=user["email"], redirect_to=redirect_to, flow_id=flow_id,
        )
        await conn.execute("UPDATE auth.users SET confirmation_sent_at = now() WHERE id = $1", user["id"])

    async def send_if_found(
        self, email: str, *, confirmed: bool, kind: str, token_type: str, verify_type: str, flow: links.Flow | None,
        redirect_to: str | None, audit_action: str, client: Client,
    ) -> bool:
        """Mail ``email`` a token if it has an account in the wanted state, with the same work
        (one statement, the email rendered either way) whether or not it has."""
        secrets = links.new_secrets(flow)
        otp, link_token = secrets
        action_url = self.deps.redirects.confirm_link(link_token, verify_type, redirect_to)
        message = self.deps.templates.message(
            kind, email, action_url=action_url, token=otp, token_hash=link_token, link_type=verify_type
        )
        async with self.db.admin.acquire() as conn, conn.transaction():
            return await links.send_if_found(
                conn, address=email, confirmed=confirmed, token_type=token_type, secrets=secrets,
                expires_in=self.settings.otp_expiry, flow=flow, message=message, audit_action=audit_action,
                ip=client.ip,
            )

    async def send_email_change(
        self, conn: Conn, user: asyncpg.Record, new_email: str, redirect_to: str | None,
        flow_id: uuid.UUID | None,
    ) -> None:
        """Record a pending email change and mail its link(s): to the new address, and to the
        current one too when ``GATEHOUSE_SECURE_EMAIL_CHANGE`` is on."""
        await conn.execute(
            "UPDATE auth.users SET email_change = $2, email_change_sent_at = now(), email_change_confirm_status = 0, "
            "updated_at = now() WHERE id = $1",
            user["id"],
            new_email,
        )
        await self.send(
            conn, user, kind="email_change", token_type="email_change_token_new", verify_type="email_change",
            to=new_email, redirect_to=redirect_to, flow_id=flow_id, new_email=new_email,
        )
        if self.settings.secure_email_change and user["email"]:
            await self.send(
                conn, user, kind="email_change", token_type="email_change_token_current", verify_type="email_change",
                to=user["email"], redirect_to=redirect_to, flow_id=flow_id, new_email=new_email,
            )
        else:
            await conn.execute(
                "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type = 'email_change_token_current'",
                user["id"],
            )
