"""The signed-in user's own account: who they are, their metadata, email and password."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gatehouse.auth import links, users
from gatehouse.auth.flows.base import Client, Flow, no_phone
from gatehouse.auth.forms import UserUpdateForm, normalize_email
from gatehouse.auth.models import User
from gatehouse.auth.passwords import check_max_length
from gatehouse.auth.sessions import Sessions
from gatehouse.core.errors import GatehouseError


class AccountFlow(Flow):
    async def current_user(self, claims: dict[str, Any]) -> User:
        """The user a verified access token names, if its session is still active."""
        return User.from_row(await self.signed_in(claims))

    async def update_user(
        self, claims: dict[str, Any], form: UserUpdateForm, client: Client, redirect_to: str | None,
        devices: Mapping[str, str] | None = None,
    ) -> User:
        """Change metadata, password and email (the new address must confirm) in one transaction."""
        user = await self.signed_in(claims)
        if form.phone:
            raise no_phone()
        new_hash: str | None = None
        same_password = False
        if form.password is not None:
            new_hash, same_password = await self._new_password(user, claims, form, client, devices or {})
        new_email = normalize_email(form.email, required=False)
        if new_email == user["email"]:
            new_email = None
        if new_email:
            await self.limit(f"email:{client.ip}", self.limits.email)
            await self.limit_address(new_email)
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
                flow_id = await self.flow_state(conn, form, "email_change")
                await self.send_email_change(conn, locked, new_email, redirect_to, flow_id)
            if same_password:  # last, so that no other refusal can follow a guess that missed
                raise GatehouseError(
                    "same_password", "New password should be different from the old password.", status=422
                )
            fresh = await users.by_id(conn, user["id"])
            assert fresh is not None
            return User.from_row(fresh)

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
        self.deps.policy.validate(password)
        hasher = self.deps.hasher
        encoded = user["encrypted_password"]
        if form.nonce is not None:
            await self._use_nonce(user, form.nonce, client)
        elif form.current_password is not None and not self.settings.secure_password_change:
            await self.limit(f"token:{client.ip}", self.limits.token)
            attempt = await self.deps.throttle.begin(user["email"] or str(user["id"]), client.ip, devices)
            if not encoded or not await hasher.verify_async(encoded, form.current_password):
                await attempt.failed()
                raise GatehouseError("invalid_credentials", "Current password is incorrect", status=400)
            await attempt.succeeded()
        elif not self._recently_authenticated(claims):
            also = "" if self.settings.secure_password_change else ", or send current_password"
            raise GatehouseError(
                "reauthentication_needed",
                f"Password update requires reauthentication: sign in again, or send the nonce GET /reauthenticate "
                f"mails{also}", status=400,
            )
        same = bool(encoded) and await hasher.verify_async(encoded, password)
        return await hasher.hash_async(password), same

    async def _use_nonce(self, user: asyncpg.Record, nonce: str, client: Client) -> None:
        """The code ``GET /reauthenticate`` mailed: it works once, expires, and wrong ones count."""
        address = user["email"]
        await self.limit(f"verify:{client.ip}", self.limits.verify)
        if not address or not nonce.isdigit() or len(nonce) != 6:
            raise GatehouseError("reauthentication_not_valid", "Verification code is invalid or has expired", status=400)
        async with self.db.admin.acquire() as conn, conn.transaction():  # commits the failure count too
            used = await links.consume_code(conn, address, nonce, "reauthentication", self.settings.otp_max_attempts)
        if used is None or used["user_id"] != user["id"]:
            raise GatehouseError("reauthentication_not_valid", "Verification code is invalid or has expired", status=400)

    async def reauthenticate(self, claims: dict[str, Any], client: Client) -> None:
        """``GET /reauthenticate``: mail the signed-in user a code (the nonce) for a sensitive change."""
        user = await self.signed_in(claims)
        if not user["email"]:
            raise GatehouseError("validation_failed", "Reauthentication requires an email address", status=422)
        await self.limit(f"email:{client.ip}", self.limits.email)
        await self.limit_address(user["email"])
        async with self.db.admin.acquire() as conn, conn.transaction():
            await self.send(conn, user, kind="reauthentication", token_type="reauthentication_token",
                            verify_type="reauthentication", to=user["email"], redirect_to=None)
            await conn.execute("UPDATE auth.users SET reauthentication_sent_at = now() WHERE id = $1", user["id"])
            await users.audit(conn, "user_reauthenticate_requested", actor=user, ip=client.ip)

    def _recently_authenticated(self, claims: dict[str, Any]) -> bool:
        window = self.settings.password_change_window
        now = datetime.now(UTC).timestamp()
        for entry in claims.get("amr") or []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("timestamp"), int | float)
                and now - entry["timestamp"] <= window
            ):
                return True
        return False
