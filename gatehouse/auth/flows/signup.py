"""Sign-up by email and password, without telling anyone whether an address has an account."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gatehouse.auth import users
from gatehouse.auth.flows.base import Client, Flow, no_phone
from gatehouse.auth.forms import SignupForm, normalize_email
from gatehouse.auth.models import Identity, Session, User
from gatehouse.auth.passwords import check_max_length
from gatehouse.core.db import Conn
from gatehouse.core.errors import GatehouseError


class SignUpFlow(Flow):
    async def sign_up(self, form: SignupForm, client: Client, redirect_to: str | None) -> User | Session:
        """Create an account. Without autoconfirm: a user (no session) and a confirmation email.

        An address that already has a confirmed account gets an email telling its owner, and
        the caller gets an answer shaped exactly like a new sign-up's: nothing reveals that the
        address is taken. An address with a sign-up nobody confirmed starts over with this one
        (see ``users.start_over``): the answer is the new registration, never the old one's id,
        dates or metadata.
        """
        if form.phone and not form.email:
            raise no_phone()
        if not form.email:
            return await self.anonymous(form, client)
        if self.settings.disable_signup:
            raise GatehouseError("signup_disabled", "Signups not allowed for this instance", status=422)
        email = normalize_email(form.email)
        assert email is not None
        password = form.password or ""
        if not password:
            raise GatehouseError("validation_failed", "Signup requires a valid password", status=400)
        check_max_length(password)
        self.deps.policy.validate(password)
        await self.limit(f"signup:{client.ip}", self.limits.signup)
        autoconfirm = self.settings.mailer_autoconfirm
        password_hash = await self.deps.hasher.hash_async(password)  # paid whether or not the address is new

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
                    return lookalike_user(email, form.data or {})
                await users.audit(conn, "user_signedup", actor=user, ip=client.ip, traits={"provider": "email"})
                if autoconfirm:
                    return await self.deps.sessions.create(
                        conn, user, method="password", ip=client.ip, user_agent=client.user_agent
                    )
                flow_id = await self.flow_state(conn, form, "email/signup")
                await self.send_confirmation(conn, user, redirect_to, flow_id)
                return await _fresh(conn, user["id"])
            if existing["email_confirmed_at"] is not None:
                if autoconfirm:
                    raise GatehouseError("user_already_exists", "User already registered", status=422)
                if await self.may_mail(email):
                    await self.send(
                        conn, existing, kind="existing_account", token_type="recovery_token",
                        verify_type="recovery", to=email, redirect_to=redirect_to,
                    )
                return lookalike_user(email, form.data or {})
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
            mailed = await self.may_mail(email)
            if mailed:
                flow_id = await self.flow_state(conn, form, "email/signup")
                await self.send_confirmation(conn, user, redirect_to, flow_id)
            if not (recreated and mailed):  # the answer must not tell the address has a pending sign-up
                return lookalike_user(email, form.data or {})
            return await _fresh(conn, user["id"])


    async def anonymous(self, form: SignupForm, client: Client) -> Session:
        """``signInAnonymously``: a real user (role ``authenticated``, ``is_anonymous`` in its tokens,
        so RLS can tell) with no address and no identity, until it adds an email or links a provider."""
        if not self.settings.anonymous_sign_ins:
            raise GatehouseError("anonymous_provider_disabled", "Anonymous sign-ins are disabled", status=422)
        if form.password:
            raise GatehouseError("validation_failed", "Signup requires a valid email address", status=400)
        if self.settings.disable_signup:
            raise GatehouseError("signup_disabled", "Signups not allowed for this instance", status=422)
        await self.limit(f"anonymous:{client.ip}", self.limits.anonymous)
        async with self.db.admin.acquire() as conn, conn.transaction():
            user = await users.create_anonymous(conn, user_metadata=form.data or {})
            await users.audit(conn, "user_signedup", actor=user, ip=client.ip, traits={"provider": "anonymous"})
            return await self.deps.sessions.create(conn, user, method="anonymous", ip=client.ip,
                                                   user_agent=client.user_agent)


async def _fresh(conn: Conn, user_id: uuid.UUID) -> User:
    row = await users.by_id(conn, user_id)
    assert row is not None
    return User.from_row(row)


def lookalike_user(email: str, data: dict[str, Any]) -> User:
    """What a new sign-up returns, for an address that is taken: same fields, same kinds of values."""
    now = datetime.now(UTC)
    stamp = now.isoformat()
    user_id = uuid.uuid4()
    identity = Identity(
        id=str(uuid.uuid4()),
        provider_id=str(user_id),
        user_id=str(user_id),
        provider="email",
        identity_data={"sub": str(user_id), "email": email, "email_verified": False, "phone_verified": False},
        email=email,
        last_sign_in_at=stamp,
        created_at=stamp,
        updated_at=stamp,
    )
    return User(
        id=user_id,
        aud="authenticated",
        role="authenticated",
        email=email,
        phone="",
        app_metadata=dict(users.APP_METADATA_EMAIL),
        user_metadata=data,
        identities=(identity,),
        created_at=now,
        updated_at=now,
        confirmation_sent_at=now,
    )
