"""Log-in and sessions: by password, by refresh token, by PKCE auth code; and sign-out."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from gatehouse.auth import users
from gatehouse.auth.flows.base import Client, Flow, invalid_credentials, no_phone
from gatehouse.auth.forms import PasswordGrant, PKCEGrant, normalize_email
from gatehouse.auth.models import Session, WeakPassword
from gatehouse.auth.sessions import Sessions
from gatehouse.auth.tokens import sha256_hex, verify_pkce
from gatehouse.core.errors import GatehouseError

PKCE_CODE_LIFETIME = timedelta(seconds=300)


class LoginFlow(Flow):
    async def password(
        self, form: PasswordGrant, client: Client, devices: Mapping[str, str] | None = None
    ) -> Session:
        """Log in by password, throttled by ``auth.throttle``; ``devices`` are the client's cookies
        (a device cookie for the account lets it past the account's slow-down). After a session,
        the front end gives the client a fresh device cookie (``deps.devices.set_cookie``)."""
        if form.phone and not form.email:
            raise no_phone()
        email = normalize_email(form.email)
        assert email is not None
        password = form.password or ""
        hasher = self.deps.hasher
        await self.limit(f"token:{client.ip}", self.limits.token)
        attempt = await self.deps.throttle.begin(email, client.ip, devices or {})
        user = await users.by_email(self.db.admin, email)
        if user is None or not user["encrypted_password"]:
            await hasher.verify_dummy_async(password)  # same cost as a real check
            await attempt.failed()
            raise invalid_credentials()
        if not await hasher.verify_async(user["encrypted_password"], password):
            await attempt.failed()
            raise invalid_credentials()
        await attempt.succeeded()
        if user["email_confirmed_at"] is None:
            raise GatehouseError("email_not_confirmed", "Email not confirmed", status=400)
        if users.is_banned(user, datetime.now(UTC)):
            raise GatehouseError("user_banned", "User is banned", status=400)
        new_hash = await hasher.hash_async(password) if hasher.needs_rehash(user["encrypted_password"]) else None
        async with self.db.admin.acquire() as conn, conn.transaction():
            if new_hash is not None:
                await users.set_password(conn, user["id"], new_hash)
            session = await self.deps.sessions.create(
                conn, user, method="password", ip=client.ip, user_agent=client.user_agent
            )
            await users.audit(conn, "login", actor=user, ip=client.ip, traits={"provider": "email"})
        policy = self.deps.policy
        reasons = policy.check(password)
        if reasons:
            weak = WeakPassword(message=policy.message(reasons), reasons=tuple(reasons))
            session = dataclasses.replace(session, weak_password=weak)
        return session

    async def refresh(self, token: str, client: Client) -> Session:
        if len(token) < 12:
            raise GatehouseError("validation_failed", "Refresh token is not valid", status=400)
        await self.limit(f"token:{client.ip}", self.limits.token)
        return await self.deps.sessions.refresh(self.db.admin, token)

    async def exchange_code(self, form: PKCEGrant, client: Client) -> Session:
        """PKCE: trade the auth code from an email link, with the verifier, for a session."""
        await self.limit(f"token:{client.ip}", self.limits.token)
        async with self.db.admin.acquire() as conn, conn.transaction():
            flow = await conn.fetchrow(
                "DELETE FROM auth.flow_state WHERE auth_code = $1 RETURNING *", sha256_hex(form.auth_code)
            )
            if flow is None or flow["user_id"] is None:
                raise GatehouseError("flow_state_not_found", "invalid flow state, no valid flow state found", status=404)
            if flow["auth_code_issued_at"] + PKCE_CODE_LIFETIME < datetime.now(UTC):
                raise GatehouseError("flow_state_expired", "invalid flow state, flow state has expired", status=422)
            if not verify_pkce(flow["code_challenge"], flow["code_challenge_method"], form.code_verifier):
                raise GatehouseError(
                    "bad_code_verifier", "code challenge does not match previously saved code verifier", status=400
                )
            user = await users.by_id(conn, flow["user_id"], for_update=True)
            if user is None:
                raise GatehouseError("user_not_found", "User not found", status=404)
            method = {"recovery": "recovery", "oauth": "oauth"}.get(flow["authentication_method"], "otp")
            session = await self.deps.sessions.create(conn, user, method=method, ip=client.ip,
                                                      user_agent=client.user_agent)
            return dataclasses.replace(session, provider_token=flow["provider_access_token"],
                                       provider_refresh_token=flow["provider_refresh_token"])

    async def logout(self, claims: dict[str, Any], scope: str, client: Client) -> None:
        """End this session (``local``), every other one (``others``) or all (``global``)."""
        if scope not in ("global", "local", "others"):
            raise GatehouseError("validation_failed", "scope must be global, local or others", status=400)
        user = await self.signed_in(claims)
        async with self.db.admin.acquire() as conn, conn.transaction():
            await Sessions.end(conn, user["id"], uuid.UUID(str(claims["session_id"])), scope)
            await users.audit(conn, "logout", actor=user, ip=client.ip, traits={"scope": scope})
