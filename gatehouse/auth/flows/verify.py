"""Verification and links: using an email link or code, and asking for one (magic link, resend).

A used token confirms the address, signs in (magic link, recovery) or completes an email
change; a PKCE link gives an auth code instead of a session (``login.exchange_code``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from gatehouse.auth import links, users
from gatehouse.auth.flows.base import Client, Flow, no_phone, otp_expired
from gatehouse.auth.forms import OtpForm, ResendForm, VerifyForm, normalize_email
from gatehouse.auth.models import AuthCode, EmailChangeAccepted, Session
from gatehouse.auth.tokens import sha256_hex
from gatehouse.core.db import Conn
from gatehouse.core.errors import GatehouseError

EMAIL_CHANGE_ACCEPTED = EmailChangeAccepted(
    "Confirmation link accepted. Please proceed to confirm link sent to the other email"
)


class VerifyFlow(Flow):
    async def verify(self, form: VerifyForm, client: Client) -> Session | EmailChangeAccepted:
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
            await self.limit(f"verify:{client.ip}", self.limits.verify)
            async with self.db.admin.acquire() as conn, conn.transaction():
                row = await links.consume(conn, form.token_hash, form.type)
                result = await self._use_row(conn, row, form.token_hash, form.type, client)
        elif form.token and form.email:
            email = normalize_email(form.email)
            assert email is not None
            await self.limit(f"verify:{email}", self.limits.verify)
            await self.limit(f"verify:{client.ip}", self.limits.verify)
            async with self.db.admin.acquire() as conn:
                async with conn.transaction():
                    row = await links.consume_code(
                        conn, email, form.token.strip(), form.type, self.settings.otp_max_attempts
                    )
                    if row is not None:
                        result = await self._use_row(conn, row, "", form.type, client)
                if row is None:  # raised after the commit: the failed attempt stays counted
                    raise otp_expired()
        elif form.phone:
            raise no_phone()
        else:
            raise GatehouseError(
                "validation_failed", "Verify requires either a token hash or an email and a token", status=400
            )
        assert not isinstance(result, AuthCode)  # only verify_link asks for codes
        return result

    async def verify_link(
        self, link_token: str, verify_type: str, client: Client
    ) -> Session | AuthCode | EmailChangeAccepted:
        """GET /verify: a Session for implicit links, an AuthCode for PKCE ones, EmailChangeAccepted
        for the first of two email-change confirmations."""
        if verify_type not in links.VERIFY_TYPES:
            raise GatehouseError("validation_failed", f"Verify type {verify_type!r} is not supported", status=400)
        await self.limit(f"verify:{client.ip}", self.limits.verify)
        async with self.db.admin.acquire() as conn, conn.transaction():
            row = await links.consume(conn, link_token, verify_type)
            return await self._use_row(conn, row, link_token, verify_type, client, pkce_code=True)

    async def _use_row(
        self, conn: Conn, row: asyncpg.Record | None, link_token: str, verify_type: str, client: Client,
        *, pkce_code: bool = False,
    ) -> Session | AuthCode | EmailChangeAccepted:
        """Act on a used token: confirm, sign in or change the email."""
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
                return EMAIL_CHANGE_ACCEPTED
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
            return AuthCode(code)
        return await self.deps.sessions.create(conn, fresh, method=method, ip=client.ip, user_agent=client.user_agent)

    async def send_otp(self, form: OtpForm, client: Client, redirect_to: str | None) -> None:
        """A magic link and code; a confirmation instead for a new (or unconfirmed) address.

        An unconfirmed address starts over as a new passwordless sign-up (``users.start_over``):
        confirming it must not activate the password of a sign-up someone else may have sent.
        """
        if form.phone and not form.email:
            raise no_phone()
        email = await self.email_request(form.email, client)
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
                flow_id = await self.flow_state(conn, form, "email/signup")
                await self.send_confirmation(conn, user, redirect_to, flow_id)
                return
            # A magic link is a recovery token (GoTrue uses one token for both).
            flow_id = await self.flow_state(conn, form, "magiclink")
            await self.send(
                conn, user, kind="magic_link", token_type="recovery_token", verify_type="magiclink",
                to=user["email"], redirect_to=redirect_to, flow_id=flow_id,
            )
            await conn.execute("UPDATE auth.users SET recovery_sent_at = now() WHERE id = $1", user["id"])

    async def resend(self, form: ResendForm, client: Client, redirect_to: str | None) -> None:
        """Send a pending confirmation again; silent when there is nothing pending.

        A sign-up's confirmation is re-sent for the pending sign-up (same password) with the
        same work whatever the address (see ``recover``).
        """
        if form.type not in ("signup", "email_change"):
            if form.type in ("sms", "phone_change"):
                raise no_phone()
            raise GatehouseError("validation_failed", "Resend type must be signup or email_change", status=400)
        email = await self.email_request(form.email, client)
        if form.type == "signup":
            await self.send_if_found(
                email, confirmed=False, kind="confirmation", token_type="confirmation_token", verify_type="email",
                flow=None, redirect_to=redirect_to, audit_action="user_confirmation_requested", client=client,
            )
            return
        async with self.db.admin.acquire() as conn, conn.transaction():
            user = await users.by_email(conn, email, for_update=True)
            if user is not None and user["email_change"]:
                await self.send_email_change(conn, user, user["email_change"], redirect_to, None)
