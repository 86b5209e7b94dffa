"""Dashboard sessions: a random token in a cookie of their own, stored hashed in PostgreSQL.

The cookie (``gh-dash``) is scoped to ``/_/``, HttpOnly, SameSite=Strict and, outside
development, Secure. Its token is 256 random bits; only its SHA-256 is stored, so every
Gatehouse process shares the sessions and a database leak yields no usable token. A session ends
after ``GATEHOUSE_DASHBOARD_IDLE_TIMEOUT`` seconds unused or ``GATEHOUSE_DASHBOARD_SESSION_LIFETIME``
seconds after sign-in, whichever comes first; one that has passed the password but not yet the
TOTP step (``stage`` ``totp`` or ``enrol``) lasts ``PENDING_SECONDS`` at most and reaches no page.

CSRF: every form and htmx request carries a token. With a session it is an HMAC of the session
token under a key derived from the signing key (nothing to store, and it dies with the session);
before sign-in it is a random value repeated in a cookie of its own (double submit). The
signing key and the API keys never reach the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from gatehouse.auth.flows.base import Deps
from gatehouse.core.keys import KeySet
from gatehouse.dashboard.accounts import Admin, token_hash

SESSION_COOKIE = "gh-dash"
PRE_CSRF_COOKIE = "gh-dash-csrf"
COOKIE_PATH = "/_/"
PENDING_SECONDS = 600
STAGES = ("totp", "enrol", "full")


@dataclass(frozen=True)
class DashboardSession:
    admin: Admin
    stage: str


def cookie(name: str, value: str, *, max_age: int, secure: bool) -> str:
    parts = [f"{name}={value}", f"Path={COOKIE_PATH}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


_LOAD = """
WITH s AS (
    UPDATE gatehouse.dashboard_sessions SET last_seen_at = now()
    WHERE token_hash = $1
      AND last_seen_at > now() - make_interval(secs => $2::float8)
      AND created_at > now() - make_interval(secs => CASE WHEN stage = 'full' THEN $3::float8 ELSE $4::float8 END)
    RETURNING admin_id, stage
)
SELECT a.*, s.stage FROM s JOIN gatehouse.dashboard_admins a ON a.id = s.admin_id
"""


class Sessions:
    def __init__(self, deps: Deps, keys: KeySet) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.secure = deps.settings.environment != "development"
        self._csrf_key = keys.derive(b"gatehouse dashboard csrf v1")

    async def start(self, admin_id: uuid.UUID, stage: str, *, ip: str, user_agent: str) -> str:
        """A new session for ``admin_id`` at ``stage``; returns the token for the cookie."""
        assert stage in STAGES
        token = secrets.token_urlsafe(32)
        await self.deps.db.admin.execute(
            "INSERT INTO gatehouse.dashboard_sessions (token_hash, admin_id, stage, ip, user_agent) "
            "VALUES ($1, $2, $3, $4, $5)",
            token_hash(token), admin_id, stage, ip[:64], user_agent[:512],
        )
        return token

    async def load(self, token: str) -> DashboardSession | None:
        """The live session of this token, its idle clock restarted; None if it ended or never was."""
        if not token or len(token) > 100:
            return None
        row = await self.deps.db.admin.fetchrow(
            _LOAD, token_hash(token), float(self.settings.dashboard_idle_timeout),
            float(self.settings.dashboard_session_lifetime), float(PENDING_SECONDS),
        )
        return DashboardSession(Admin.from_row(row), row["stage"]) if row else None

    async def promote(self, token: str, stage: str) -> None:
        await self.deps.db.admin.execute(
            "UPDATE gatehouse.dashboard_sessions SET stage = $2 WHERE token_hash = $1", token_hash(token), stage
        )

    async def end(self, token: str) -> None:
        await self.deps.db.admin.execute("DELETE FROM gatehouse.dashboard_sessions WHERE token_hash = $1",
                                         token_hash(token))

    def session_cookie(self, token: str) -> str:
        return cookie(SESSION_COOKIE, token, max_age=self.settings.dashboard_session_lifetime, secure=self.secure)

    def clear_cookie(self) -> str:
        return cookie(SESSION_COOKIE, "", max_age=0, secure=self.secure)

    def pre_csrf_cookie(self, value: str) -> str:
        return cookie(PRE_CSRF_COOKIE, value, max_age=3600, secure=self.secure)

    def csrf_for_session(self, token: str) -> str:
        return hmac.new(self._csrf_key, token.encode(), hashlib.sha256).hexdigest()


def csrf_matches(expected: str, submitted: object) -> bool:
    return isinstance(submitted, str) and bool(expected) and hmac.compare_digest(submitted.encode(), expected.encode())
