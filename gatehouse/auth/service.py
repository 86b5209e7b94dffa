"""The auth rules: sign-up, log-in, verification, recovery, passwordless, the user's own account.

Handlers (``api.py``) and the web pages call these with plain arguments; nothing here knows
HTTP. Every change and the email it needs commit in one transaction (the outbox), and every
rate limit is counted in PostgreSQL before the work starts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gatehouse.auth import links, users
from gatehouse.auth.devices import DeviceCookies
from gatehouse.auth.forms import (
    PKCE, OtpForm, PasswordGrant, PKCEGrant, RecoverForm, ResendForm, SignupForm, UserUpdateForm, VerifyForm,
    normalize_email,
)
from gatehouse.auth.passwords import PasswordHasher, PasswordPolicy, check_max_length
from gatehouse.auth.sessions import Sessions
from gatehouse.auth.throttle import PasswordThrottle
from gatehouse.auth.tokens import AccessTokens, RefreshTokens, sha256_hex, verify_pkce
from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet
from gatehouse.core.ratelimit import Limit, RateLimiter
from gatehouse.mail.outbox import enqueue
from gatehouse.mail.render import Templates

PKCE_CODE_LIFETIME = timedelta(seconds=300)
EMAIL_CHANGE_ACCEPTED = "Confirmation link accepted. Please proceed to confirm link sent to the other email"


@dataclass(frozen=True)
class Client:
    """Who is asking, as far as rate limits and the audit log care."""

    ip: str
    user_agent: str = ""


def invalid_credentials() -> GatehouseError:
    return GatehouseError("invalid_credentials", "Invalid login credentials", status=400)


def otp_expired() -> GatehouseError:
    return GatehouseError("otp_expired", "Email link is invalid or has expired", status=403)


def _pkce(form: PKCE, method: str) -> links.Flow | None:
    """The PKCE challenge a request carries, checked, for a flow row written later."""
    if not form.code_challenge:
        return None
    challenge_method = (form.code_challenge_method or "s256").lower()
    if challenge_method not in ("s256", "plain"):
        raise GatehouseError("validation_failed", "code_challenge_method must be s256 or plain", status=400)
    return links.Flow(challenge_method, form.code_challenge, method)


def _no_phone() -> GatehouseError:
    return GatehouseError("phone_provider_disabled", "Phone sign-in is not available on this server", status=422)


class AuthService:
    def __init__(self, database: Database, settings: Settings, keys: KeySet, templates: Templates) -> None:
        self.db = database
        self.settings = settings
        self.hasher = PasswordHasher(settings)
        self.policy = PasswordPolicy(settings)
        self.limiter = RateLimiter(settings)
        self.devices = DeviceCookies(keys, settings)
        self.throttle = PasswordThrottle(self.limiter, database, self.devices, settings.password_slowdown_max)
        self.templates = templates
        self.redirects = links.Redirects(settings)
        self.sessions = Sessions(
            AccessTokens(keys, settings), RefreshTokens(keys), settings.refresh_token_reuse_interval
        )

    def close(self) -> None:
        self.hasher.close()

    # -- limits -------------------------------------------------------------------------------

    async def _limit(self, key: str, limit: Limit) -> None:
        await self.limiter.hit(self.db.admin, key, limit)

    async def _limit_address(self, address: str) -> None:
        limit = self.limiter.limits.email_address
        await self.limiter.hit(
            self.db.admin,
            f"mail:{address}",
            limit,
            code="over_email_send_rate_limit",
            message=f"For security purposes, you can only request this after {limit.seconds} seconds.",
        )

    # -- mail ---------------------------------------------------------------------------------

    async def _flow_state(self, conn: asyncpg.Connection, form: PKCE, method: str) -> uuid.UUID | None:
        flow = _pkce(form, method)
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

    async def _send(
        self,
        conn: asyncpg.Connection,
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
        action_url = self.redirects.confirm_link(link_token, verify_type, redirect_to)
        context.setdefault("email", user["email"])
        message = self.templates.message(
            kind, to, user_id=user["id"], action_url=action_url, token=otp, token_hash=link_token,
            link_type=verify_type, **context,
        )
        await enqueue(conn, message)

    async def _send_confirmation(
        self, conn: asyncpg.Connection, user: asyncpg.Record, redirect_to: str | None, flow_id: uuid.UUID | None
    ) -> None:
        await self._send(
            conn, user, kind="confirmation", token_type="confirmation_token", verify_type="email",
            to=user["email"], redirect_to=redirect_to, flow_id=flow_id,
        )
        await conn.execute("UPDATE auth.users SET confirmation_sent_at = now() WHERE id = $1", user["id"])

    async def _send_recovery_token(
        self, conn: asyncpg.Connection, user: asyncpg.Record, kind: str, verify_type: str,
        redirect_to: str | None, flow_id: uuid.UUID | None,
    ) -> None:
        """A recovery-token email (password reset or magic link; GoTrue uses one token for both)."""
        await self._send(
            conn, user, kind=kind, token_type="recovery_token", verify_type=verify_type,
            to=user["email"], redirect_to=redirect_to, flow_id=flow_id,
        )
        await conn.execute("UPDATE auth.users SET recovery_sent_at = now() WHERE id = $1", user["id"])

    # -- sign-up ------------------------------------------------------------------------------

    async def sign_up(self, form: SignupForm, client: Client, redirect_to: str | None) -> dict[str, Any]:
        """Create an account. Without autoconfirm: a user (no session) and a confirmation email.

        An address that already has a confirmed account gets an email telling its owner, and
        the caller gets an answer shaped exactly like a new sign-up's: nothing reveals that the
        address is taken. An address with a sign-up nobody confirmed starts over with this one
        (see ``users.start_over``): the answer is the new registration, never the old one's id,
        dates or metadata.
        """
        if form.phone and not form.email:
            raise _no_phone()
        if not form.email:
            raise GatehouseError("anonymous_provider_disabled", "Anonymous sign-ins are disabled", status=422)
        if self.settings.disable_signup:
            raise GatehouseError("signup_disabled", "Signups not allowed for this instance", status=422)
        email = normalize_email(form.email)
        assert email is not None
        password = form.password or ""
        if not password:
            raise GatehouseError("validation_failed", "Signup requires a valid password", status=400)
        check_max_length(password)
        self.policy.validate(password)
        await self._limit(f"signup:{client.ip}", self.limiter.limits.signup)
        autoconfirm = self.settings.mailer_autoconfirm
        password_hash = await self.hasher.hash_async(password)  # paid whether or not the address is new

        async with self.db.admin.acquire() as conn, conn.transaction():
            existing = await users.by_email(conn, email, for_update=True)
            if existing is None:
                try:
                    async with conn.transaction():  # a savepoint: a concurrent sign-up may win the race
                        user = await users.create(
                            conn, email=email, password_hash=password_hash, user_metadata=form.data or {},
                            confirmed=autoconfirm,
                        )
                except asyncpg.UniqueViolationError:
                    if autoconfirm:
                        raise GatehouseError("user_already_exists", "User already registered", status=422) from None
                    return _lookalike_user(email, form.data or {})
                await users.audit(conn, "user_signedup", actor=user, ip=client.ip, traits={"provider": "email"})
                if autoconfirm:
                    return await self.sessions.create(conn, user, method="password", ip=client.ip, user_agent=client.user_agent)
                flow_id = await self._flow_state(conn, form, "email/signup")
                await self._send_confirmation(conn, user, redirect_to, flow_id)
                fresh = await users.by_id(conn, user["id"])
                assert fresh is not None
                return users.user_json(fresh)
            if existing["email_confirmed_at"] is not None:
                if autoconfirm:
                    raise GatehouseError("user_already_exists", "User already registered", status=422)
                if await self._may_mail(email):
                    await self._send(
                        conn, existing, kind="existing_account", token_type="recovery_token",
                        verify_type="recovery", to=email, redirect_to=redirect_to,
                    )
                return _lookalike_user(email, form.data or {})
            # Registered but never confirmed: whoever sent that sign-up may not own the address,
            # so this one starts over (new password, metadata and link; the old link is dead)
            # and only a link from this sign-up's email can activate this password.
            user, recreated = await users.start_over(
                conn, existing, password_hash=password_hash, user_metadata=form.data or {}
            )
            await users.audit(
                conn, "user_signedup", actor=user, ip=client.ip,
                traits={"provider": "email", "replaces": str(existing["id"])},
            )
            mailed = await self._may_mail(email)
            if mailed:
                flow_id = await self._flow_state(conn, form, "email/signup")
                await self._send_confirmation(conn, user, redirect_to, flow_id)
            if not (recreated and mailed):  # the answer must not tell the address has a pending sign-up
                return _lookalike_user(email, form.data or {})
            fresh = await users.by_id(conn, user["id"])
            assert fresh is not None
            return users.user_json(fresh)

    async def _email_request(self, address: str | None, client: Client) -> str:
        """A request that mails an address: a valid address, within the IP and address limits."""
        email = normalize_email(address)
        assert email is not None
        await self._limit(f"email:{client.ip}", self.limiter.limits.email)
        await self._limit_address(email)
        return email

    async def _may_mail(self, address: str) -> bool:
        """The per-address mail limit, applied silently where a 429 would tell who has an account."""
        try:
            await self._limit_address(address)
        except GatehouseError:
            return False
        return True

    # -- log-in -------------------------------------------------------------------------------

    async def sign_in_password(
        self, form: PasswordGrant, client: Client, devices: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Log in by password, throttled by ``auth.throttle``; ``devices`` are the client's cookies
        (a device cookie for the account lets it past the account's slow-down). After a session,
        the front end gives the client a fresh device cookie (``self.devices.set_cookie``)."""
        if form.phone and not form.email:
            raise _no_phone()
        email = normalize_email(form.email)
        assert email is not None
        password = form.password or ""
        await self._limit(f"token:{client.ip}", self.limiter.limits.token)
        attempt = await self.throttle.begin(email, client.ip, devices or {})
        user = await users.by_email(self.db.admin, email)  # type: ignore[arg-type]
        if user is None or not user["encrypted_password"]:
            await self.hasher.verify_dummy_async(password)  # same cost as a real check
            await attempt.failed()
            raise invalid_credentials()
        if not await self.hasher.verify_async(user["encrypted_password"], password):
            await attempt.failed()
            raise invalid_credentials()
        await attempt.succeeded()
        if user["email_confirmed_at"] is None:
            raise GatehouseError("email_not_confirmed", "Email not confirmed", status=400)
        if users.is_banned(user, datetime.now(UTC)):
            raise GatehouseError("user_banned", "User is banned", status=400)
        new_hash = await self.hasher.hash_async(password) if self.hasher.needs_rehash(user["encrypted_password"]) else None
        async with self.db.admin.acquire() as conn, conn.transaction():
            if new_hash is not None:
                await users.set_password(conn, user["id"], new_hash)
            session = await self.sessions.create(conn, user, method="password", ip=client.ip, user_agent=client.user_agent)
            await users.audit(conn, "login", actor=user, ip=client.ip, traits={"provider": "email"})
        reasons = self.policy.check(password)
        if reasons:
            session["weak_password"] = {"message": self.policy.message(reasons), "reasons": reasons}
        return session

    async def refresh(self, token: str, client: Client) -> dict[str, Any]:
        if len(token) < 12:
            raise GatehouseError("validation_failed", "Refresh token is not valid", status=400)
        await self._limit(f"token:{client.ip}", self.limiter.limits.token)
        session, _user = await self.sessions.refresh(self.db.admin, token)
        return session

    async def exchange_code(self, form: PKCEGrant, client: Client) -> dict[str, Any]:
        """PKCE: trade the auth code from an email link, with the verifier, for a session."""
        await self._limit(f"token:{client.ip}", self.limiter.limits.token)
        async with self.db.admin.acquire() as conn, conn.transaction():
            flow = await conn.fetchrow(
                "DELETE FROM auth.flow_state WHERE auth_code = $1 RETURNING *", sha256_hex(form.auth_code)
            )
            if flow is None or flow["user_id"] is None:
                raise GatehouseError("flow_state_not_found", "invalid flow state, no valid flow state found", status=404)
            if flow["auth_code_issued_at"] + PKCE_CODE_LIFETIME < datetime.now(UTC):
                raise GatehouseError("flow_state_expired", "invalid flow state, flow state has expired", status=422)
            if not verify_pkce(flow["code_challenge"], flow["code_challenge_method"], form.code_verifier):
                raise GatehouseError("bad_code_verifier", "code challenge does not match previously saved code verifier", status=400)
            user = await users.by_id(conn, flow["user_id"], for_update=True)
            if user is None:
                raise GatehouseError("user_not_found", "User not found", status=404)
            method = "recovery" if flow["authentication_method"] == "recovery" else "otp"
            return await self.sessions.create(conn, user, method=method, ip=client.ip, user_agent=client.user_agent)

    # -- verification -------------------------------------------------------------------------

    async def verify(self, form: VerifyForm, client: Client) -> dict[str, Any]:
        """Use an email link (``token_hash``) or code (``email`` + ``token``): a session.

        A link token is random and unguessable; a code is six digits, so wrong codes are counted
        per address in the token rows (``links.consume_code``), and the count commits even
        though the request fails.
        """
        if form.type not in links.VERIFY_TYPES:
            raise GatehouseError("validation_failed", f"Verify type {form.type!r} is not supported", status=400)
        if form.token_hash:
            if form.email or form.phone or form.redirect_to:
                raise GatehouseError(
                    "validation_failed", "Only the token_hash and type should be provided", status=400
                )
            await self._limit(f"verify:{client.ip}", self.limiter.limits.verify)
            async with self.db.admin.acquire() as conn, conn.transaction():
                row = await links.consume(conn, form.token_hash, form.type)
                result = await self._use_row(conn, row, form.token_hash, form.type, client)
        elif form.token and form.email:
            email = normalize_email(form.email)
            assert email is not None
            await self._limit(f"verify:{email}", self.limiter.limits.verify)
            await self._limit(f"verify:{client.ip}", self.limiter.limits.verify)
            async with self.db.admin.acquire() as conn:
                async with conn.transaction():
                    row = await links.consume_code(
                        conn, email, form.token.strip(), form.type, self.settings.otp_max_attempts
                    )
                    result = None if row is None else await self._use_row(conn, row, "", form.type, client)
                if row is None:  # raised after the commit: the failed attempt stays counted
                    raise otp_expired()
        elif form.phone:
            raise _no_phone()
        else:
            raise GatehouseError("validation_failed", "Verify requires either a token hash or an email and a token", status=400)
        if result is None:
            return {"msg": EMAIL_CHANGE_ACCEPTED, "code": "200"}
        return result[0]

    async def verify_link(self, link_token: str, verify_type: str, client: Client) -> tuple[str, dict[str, Any] | str]:
        """GET /verify: ("session", Session) for implicit links, ("code", auth code) for PKCE ones,
        ("accepted", message) for the first of two email-change confirmations."""
        if verify_type not in links.VERIFY_TYPES:
            raise GatehouseError("validation_failed", f"Verify type {verify_type!r} is not supported", status=400)
        await self._limit(f"verify:{client.ip}", self.limiter.limits.verify)
        async with self.db.admin.acquire() as conn, conn.transaction():
            row = await links.consume(conn, link_token, verify_type)
            result = await self._use_row(conn, row, link_token, verify_type, client, pkce_code=True)
        if result is None:
            return "accepted", EMAIL_CHANGE_ACCEPTED
        session, code = result
        return ("code", code) if code else ("session", session)

    async def _use_row(
        self, conn: asyncpg.Connection, row: asyncpg.Record | None, link_token: str, verify_type: str, client: Client,
        *, pkce_code: bool = False,
    ) -> tuple[dict[str, Any], str | None] | None:
        """Act on a used token: confirm, sign in or change the email. None: half of an email change."""
        if row is None:
            raise otp_expired()
        user = await users.by_id(conn, row["user_id"], for_update=True)
        if user is None:
            raise otp_expired()
        if users.is_banned(user, datetime.now(UTC)):
            raise GatehouseError("user_banned", "User is banned", status=403)
        token_type = row["token_type"]
        method = "otp"
        if token_type == "confirmation_token":
            await users.mark_email_confirmed(conn, user["id"])
            await users.audit(conn, "user_confirmed", actor=user, ip=client.ip)
        elif token_type == "recovery_token":
            if user["email_confirmed_at"] is None:
                # Only an admin's generated link mails a recovery token to an unconfirmed address:
                # its reader did not choose the pending sign-up's password or metadata.
                await users.drop_pending(conn, user["id"])
            await users.mark_email_confirmed(conn, user["id"])
            method = "recovery" if verify_type == "recovery" else "magiclink"
            await users.audit(conn, "login", actor=user, ip=client.ip, traits={"method": method})
        else:  # email change: both addresses must confirm when the secure change is on
            if not user["email_change"]:
                raise otp_expired()
            remaining = await links.pending_types(conn, user["id"], ("email_change_token_new", "email_change_token_current"))
            if remaining:
                await conn.execute(
                    "UPDATE auth.users SET email_change_confirm_status = 1 WHERE id = $1", user["id"]
                )
                return None
            await users.change_email(conn, user["id"], user["email_change"])
            await users.audit(conn, "user_modified", actor=user, ip=client.ip, traits={"email_change": True})
        fresh = await users.by_id(conn, user["id"])
        assert fresh is not None
        if pkce_code and link_token.startswith("pkce_") and row["flow_state_id"] is not None:
            code = str(uuid.uuid4())
            await conn.execute(
                "UPDATE auth.flow_state SET user_id = $2, auth_code = $3, auth_code_issued_at = now(), updated_at = now() "
                "WHERE id = $1",
                row["flow_state_id"],
                user["id"],
                sha256_hex(code),
            )
            return {}, code
        session = await self.sessions.create(conn, fresh, method=method, ip=client.ip, user_agent=client.user_agent)
        return session, None

    # -- recovery and passwordless --------------------------------------------------------

    async def recover(self, form: RecoverForm, client: Client, redirect_to: str | None) -> None:
        """Send a password-reset email; the same answer, and the same work, whether or not the
        address has an account.

        The email is rendered and one statement (``links.send_if_found``) is sent either way, so
        the time taken does not tell either. An address nobody confirmed gets nothing: its
        pending password may be a stranger's, and a reset link would confirm the address with
        it (signing up again starts over instead).
        """
        email = await self._email_request(form.email, client)
        flow = _pkce(form, "recovery")
        await self._send_if_found(
            email, confirmed=True, kind="recovery", token_type="recovery_token", verify_type="recovery",
            flow=flow, redirect_to=redirect_to, audit_action="user_recovery_requested", client=client,
        )

    async def _send_if_found(
        self, email: str, *, confirmed: bool, kind: str, token_type: str, verify_type: str, flow: links.Flow | None,
        redirect_to: str | None, audit_action: str, client: Client,
    ) -> bool:
        secrets = links.new_secrets(flow)
        otp, link_token = secrets
        action_url = self.redirects.confirm_link(link_token, verify_type, redirect_to)
        message = self.templates.message(
            kind, email, action_url=action_url, token=otp, token_hash=link_token, link_type=verify_type
        )
        async with self.db.admin.acquire() as conn, conn.transaction():
            return await links.send_if_found(
                conn, address=email, confirmed=confirmed, token_type=token_type, secrets=secrets,
                expires_in=self.settings.otp_expiry, flow=flow, message=message, audit_action=audit_action,
                ip=client.ip,
            )

    async def send_otp(self, form: OtpForm, client: Client, redirect_to: str | None) -> None:
        """A magic link and code; a confirmation instead for a new (or unconfirmed) address.

        An unconfirmed address starts over as a new passwordless sign-up (``users.start_over``):
        confirming it must not activate the password of a sign-up someone else may have sent.
        """
        if form.phone and not form.email:
            raise _no_phone()
        email = await self._email_request(form.email, client)
        async with self.db.admin.acquire() as conn, conn.transaction():
            user = await users.by_email(conn, email, for_update=True)
            if user is None:
                if not form.create_user:
                    raise GatehouseError("otp_disabled", "Signups not allowed for otp", status=422)
                if self.settings.disable_signup:
                    raise GatehouseError("signup_disabled", "Signups not allowed for this instance", status=422)
                user = await users.create(
                    conn, email=email, password_hash=None, user_metadata=form.data or {}, confirmed=False
                )
                await users.audit(conn, "user_signedup", actor=user, ip=client.ip, traits={"provider": "email"})
            elif user["email_confirmed_at"] is None:
                replaced = user["id"]
                user, _ = await users.start_over(conn, user, password_hash=None, user_metadata=form.data or {})
                await users.audit(
                    conn, "user_signedup", actor=user, ip=client.ip,
                    traits={"provider": "email", "replaces": str(replaced)},
                )
            if user["email_confirmed_at"] is None:
                flow_id = await self._flow_state(conn, form, "email/signup")
                await self._send_confirmation(conn, user, redirect_to, flow_id)
                return
            flow_id = await self._flow_state(conn, form, "magiclink")
            await self._send_recovery_token(conn, user, "magic_link", "magiclink", redirect_to, flow_id)

    async def resend(self, form: ResendForm, client: Client, redirect_to: str | None) -> None:
        """Send a pending confirmation again; silent when there is nothing pending.

        A sign-up's confirmation is re-sent for the pending sign-up (same password) with the
        same work whatever the address (see ``recover``).
        """
        if form.type not in ("signup", "email_change"):
            if form.type in ("sms", "phone_change"):
                raise _no_phone()
            raise GatehouseError("validation_failed", "Resend type must be signup or email_change", status=400)
        email = await self._email_request(form.email, client)
        if form.type == "signup":
            await self._send_if_found(
                email, confirmed=False, kind="confirmation", token_type="confirmation_token", verify_type="email",
                flow=None, redirect_to=redirect_to, audit_action="user_confirmation_requested", client=client,
            )
            return
        async with self.db.admin.acquire() as conn, conn.transaction():
            user = await users.by_email(conn, email, for_update=True)
            if user is not None and user["email_change"]:
                await self._send_email_change(conn, user, user["email_change"], redirect_to, None)

    # -- the signed-in user -------------------------------------------------------------------

    async def current_user(self, claims: dict[str, Any]) -> asyncpg.Record:
        """The user a verified access token names, if its session is still active."""
        try:
            user_id = uuid.UUID(str(claims.get("sub")))
        except ValueError:
            raise GatehouseError("bad_jwt", "invalid claim: sub claim must be a UUID", status=403) from None
        user = await users.by_id(self.db.admin, user_id)  # type: ignore[arg-type]
        if user is None:
            raise GatehouseError("user_not_found", "User from sub claim in JWT does not exist", status=403)
        if not await Sessions.is_active(self.db.admin, claims.get("session_id"), str(user_id)):
            raise GatehouseError("session_not_found", "Session from session_id claim in JWT does not exist", status=403)
        if users.is_banned(user, datetime.now(UTC)):
            raise GatehouseError("user_banned", "User is banned", status=403)
        return user

    async def update_user(
        self, claims: dict[str, Any], form: UserUpdateForm, client: Client, redirect_to: str | None,
        devices: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        user = await self.current_user(claims)
        if form.phone:
            raise _no_phone()
        new_hash: str | None = None
        same_password = False
        if form.password is not None:
            new_hash, same_password = await self._new_password(user, claims, form, client, devices or {})
        new_email = normalize_email(form.email, required=False)
        if new_email == user["email"]:
            new_email = None
        if new_email:
            await self._limit(f"email:{client.ip}", self.limiter.limits.email)
            await self._limit_address(new_email)
        async with self.db.admin.acquire() as conn, conn.transaction():
            locked = await users.by_id(conn, user["id"], for_update=True)
            assert locked is not None
            if form.data is not None:
                merged = {**(locked["raw_user_meta_data"] or {}), **form.data}
                merged = {key: value for key, value in merged.items() if value is not None}
                await conn.execute(
                    "UPDATE auth.users SET raw_user_meta_data = $2, updated_at = now() WHERE id = $1", user["id"], merged
                )
                await users.audit(conn, "user_modified", actor=locked, ip=client.ip, traits={"user_metadata": True})
            if new_hash is not None:
                await users.set_password(conn, user["id"], new_hash)
                await Sessions.end(conn, user["id"], uuid.UUID(str(claims["session_id"])), "others")
                await users.audit(conn, "user_updated_password", actor=locked, ip=client.ip)
            if new_email:
                if await users.by_email(conn, new_email) is not None:
                    raise GatehouseError(
                        "email_exists", "A user with this email address has already been registered", status=422
                    )
                flow_id = await self._flow_state(conn, form, "email_change")
                await self._send_email_change(conn, locked, new_email, redirect_to, flow_id)
            if same_password:  # last, so that no other refusal can follow a guess that missed
                raise GatehouseError(
                    "same_password", "New password should be different from the old password.", status=422
                )
            fresh = await users.by_id(conn, user["id"])
            assert fresh is not None
            return users.user_json(fresh)

    async def _new_password(
        self, user: asyncpg.Record, claims: dict[str, Any], form: UserUpdateForm, client: Client,
        devices: Mapping[str, str],
    ) -> tuple[str, bool]:
        """Check a password change: strength, a recent sign-in (or the current password); return
        the new hash and whether the new password is the current one.

        A stolen access token must not become a password oracle. ``current_password`` is checked
        like a log-in: against the same per-address, per-account and device limits. And the new
        password is compared with the current one (``same_password``) only once the caller has
        proved they know it, by ``current_password`` in this request or by signing in within
        ``GATEHOUSE_PASSWORD_CHANGE_WINDOW``; before that, a new password equal to the current
        one gets the answer any other would (``reauthentication_needed``). Within the window, the
        caller raises ``same_password`` only after every other check of the request has passed,
        so a guess that misses always changes the password: the comparison answers one guess
        about a password at most, never a series.
        """
        password = form.password or ""
        check_max_length(password)
        self.policy.validate(password)
        encoded = user["encrypted_password"]
        if form.current_password is not None:
            await self._limit(f"token:{client.ip}", self.limiter.limits.token)
            attempt = await self.throttle.begin(user["email"] or str(user["id"]), client.ip, devices)
            if not encoded or not await self.hasher.verify_async(encoded, form.current_password):
                await attempt.failed()
                raise GatehouseError("invalid_credentials", "Current password is incorrect", status=400)
            await attempt.succeeded()
        elif not self._recently_authenticated(claims):
            raise GatehouseError(
                "reauthentication_needed",
                "Password update requires reauthentication: sign in again, or send current_password",
                status=400,
            )
        same = bool(encoded) and await self.hasher.verify_async(encoded, password)
        return await self.hasher.hash_async(password), same

    def _recently_authenticated(self, claims: dict[str, Any]) -> bool:
        window = self.settings.password_change_window
        now = datetime.now(UTC).timestamp()
        for entry in claims.get("amr") or []:
            if isinstance(entry, dict) and isinstance(entry.get("timestamp"), int | float):
                if now - entry["timestamp"] <= window:
                    return True
        return False

    async def _send_email_change(
        self, conn: asyncpg.Connection, user: asyncpg.Record, new_email: str, redirect_to: str | None,
        flow_id: uuid.UUID | None,
    ) -> None:
        await conn.execute(
            "UPDATE auth.users SET email_change = $2, email_change_sent_at = now(), email_change_confirm_status = 0, "
            "updated_at = now() WHERE id = $1",
            user["id"],
            new_email,
        )
        await self._send(
            conn, user, kind="email_change", token_type="email_change_token_new", verify_type="email_change",
            to=new_email, redirect_to=redirect_to, flow_id=flow_id, new_email=new_email,
        )
        if self.settings.secure_email_change and user["email"]:
            await self._send(
                conn, user, kind="email_change", token_type="email_change_token_current", verify_type="email_change",
                to=user["email"], redirect_to=redirect_to, flow_id=flow_id, new_email=new_email,
            )
        else:
            await conn.execute(
                "DELETE FROM auth.one_time_tokens WHERE user_id = $1 AND token_type = 'email_change_token_current'",
                user["id"],
            )

    async def logout(self, claims: dict[str, Any], scope: str, client: Client) -> None:
        if scope not in ("global", "local", "others"):
            raise GatehouseError("validation_failed", "scope must be global, local or others", status=400)
        user = await self.current_user(claims)
        async with self.db.admin.acquire() as conn, conn.transaction():
            await Sessions.end(conn, user["id"], uuid.UUID(str(claims["session_id"])), scope)
            await users.audit(conn, "logout", actor=user, ip=client.ip, traits={"scope": scope})


def _lookalike_user(email: str, data: dict[str, Any]) -> dict[str, Any]:
    """What a new sign-up returns, for an address that is taken: same keys, same kinds of values."""
    now = datetime.now(UTC).isoformat()
    user_id = str(uuid.uuid4())
    identity_id = str(uuid.uuid4())
    return {
        "id": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "phone": "",
        "confirmation_sent_at": now,
        "app_metadata": dict(users.APP_METADATA_EMAIL),
        "user_metadata": data,
        "identities": [
            {
                "identity_id": identity_id,
                "id": user_id,
                "user_id": user_id,
                "identity_data": {"sub": user_id, "email": email, "email_verified": False, "phone_verified": False},
                "provider": "email",
                "last_sign_in_at": now,
                "created_at": now,
                "updated_at": now,
                "email": email,
            }
        ],
        "created_at": now,
        "updated_at": now,
        "is_anonymous": False,
    }
