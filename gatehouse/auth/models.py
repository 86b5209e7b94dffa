"""What the auth flows return: users, sessions and the outcomes of a link, as typed values.

The flows hand these to their front ends: ``api.py`` and ``admin.py`` render them as GoTrue
JSON (``wire.py``), the web pages put a ``Session`` in cookies as it is. A ``Session`` carries
the claims its access token was signed with, so nobody re-verifies a token auth just minted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

#: The user's timestamps that GoTrue leaves out of its JSON while they are null, in its order.
OPTIONAL_TIMES = (
    "email_confirmed_at", "phone_confirmed_at", "confirmed_at", "confirmation_sent_at", "recovery_sent_at",
    "email_change_sent_at", "invited_at", "last_sign_in_at", "banned_until", "deleted_at",
)


@dataclass(frozen=True)
class Identity:
    """A way to sign in to a user: ``email``, or a provider. Times as PostgreSQL wrote them in JSON."""

    id: str
    provider_id: str
    user_id: str
    provider: str
    identity_data: dict[str, Any]
    email: str | None = None
    last_sign_in_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Identity:
        """An identity from ``to_jsonb(auth.identities)``, as ``users`` reads it with the user."""
        return cls(
            id=value["id"],
            provider_id=value["provider_id"],
            user_id=value["user_id"],
            provider=value["provider"],
            identity_data=value.get("identity_data") or {},
            email=value.get("email"),
            last_sign_in_at=value.get("last_sign_in_at"),
            created_at=value.get("created_at"),
            updated_at=value.get("updated_at"),
        )


@dataclass(frozen=True)
class Factor:
    """A second factor (``auth.mfa_factors``), never with its secret."""

    id: str
    factor_type: str
    status: str
    friendly_name: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    last_challenged_at: str | None = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Factor:
        """A factor as ``users`` reads it with the user (``jsonb_build_object`` of its public columns)."""
        return cls(
            id=value["id"], factor_type=value["factor_type"], status=value["status"],
            friendly_name=value.get("friendly_name"), created_at=value.get("created_at"),
            updated_at=value.get("updated_at"), last_challenged_at=value.get("last_challenged_at"),
        )


@dataclass(frozen=True)
class User:
    """A user as the flows show it: no password hash, strings never null, ``new_email`` pending."""

    id: uuid.UUID
    aud: str
    role: str
    email: str
    phone: str
    app_metadata: dict[str, Any]
    user_metadata: dict[str, Any]
    identities: tuple[Identity, ...]
    created_at: datetime | None
    updated_at: datetime | None
    is_anonymous: bool = False
    new_email: str = ""
    email_confirmed_at: datetime | None = None
    phone_confirmed_at: datetime | None = None
    confirmed_at: datetime | None = None
    confirmation_sent_at: datetime | None = None
    recovery_sent_at: datetime | None = None
    email_change_sent_at: datetime | None = None
    invited_at: datetime | None = None
    last_sign_in_at: datetime | None = None
    banned_until: datetime | None = None
    deleted_at: datetime | None = None
    factors: tuple[Factor, ...] = ()

    @classmethod
    def from_row(cls, row: asyncpg.Record | Mapping[str, Any]) -> User:
        """A user from a row of ``users.by_id`` (``auth.users`` with its identities)."""
        return cls(
            id=row["id"],
            aud=row["aud"] or "",
            role=row["role"] or "",
            email=row["email"] or "",
            phone=row["phone"] or "",
            app_metadata=row["raw_app_meta_data"] or {},
            user_metadata=row["raw_user_meta_data"] or {},
            identities=tuple(Identity.from_json(identity) for identity in (row["identities"] or [])),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            is_anonymous=bool(row["is_anonymous"]),
            new_email=row["email_change"] or "",
            factors=tuple(Factor.from_json(f) for f in (row.get("factors") or [])),
            **{name: row[name] for name in OPTIONAL_TIMES},
        )


@dataclass(frozen=True)
class WeakPassword:
    """A log-in whose password no longer meets the policy: it worked, and the client is told why."""

    message: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Session:
    """A signed-in session: its tokens, its user, and the claims signed into the access token."""

    access_token: str
    refresh_token: str
    expires_in: int
    expires_at: int
    user: User
    claims: dict[str, Any]
    token_type: str = "bearer"
    weak_password: WeakPassword | None = field(default=None)
    #: The sign-in provider's own tokens, handed over once when a provider sign-in ends in a session.
    provider_token: str | None = None
    provider_refresh_token: str | None = None


@dataclass(frozen=True)
class EmailChangeAccepted:
    """One of two email-change links was used; the other address must confirm too."""

    message: str


@dataclass(frozen=True)
class AuthCode:
    """A PKCE link was used: the client trades this code, with its verifier, for a session."""

    code: str


@dataclass(frozen=True)
class GeneratedLink:
    """What an email would carry, made for an admin instead of sent (``admin/generate_link``)."""

    user: User
    action_link: str
    email_otp: str
    hashed_token: str
    verification_type: str
    redirect_to: str
