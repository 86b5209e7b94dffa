"""GoTrue's JSON for the auth values: what ``supabase-js`` and ``supabase-py`` parse.

The flows return ``models``; only the handlers (``api.py``) call these to answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gatehouse.auth.models import OPTIONAL_TIMES, Factor, GeneratedLink, Identity, Session, User


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def identity_json(identity: Identity) -> dict[str, Any]:
    return {
        "identity_id": identity.id,
        "id": identity.provider_id,
        "user_id": identity.user_id,
        "identity_data": identity.identity_data,
        "provider": identity.provider,
        "last_sign_in_at": identity.last_sign_in_at,
        "created_at": identity.created_at,
        "updated_at": identity.updated_at,
        "email": identity.email,
    }


def factor_json(factor: Factor) -> dict[str, Any]:
    """A factor as the upstream server shows it (no secret; ``friendly_name`` left out when empty)."""
    body: dict[str, Any] = {
        "id": factor.id, "created_at": factor.created_at, "updated_at": factor.updated_at, "status": factor.status,
        "factor_type": factor.factor_type, "phone": "", "last_challenged_at": factor.last_challenged_at,
    }
    if factor.friendly_name:
        body["friendly_name"] = factor.friendly_name
    return body


def user_json(user: User) -> dict[str, Any]:
    """The user as GoTrue returns it: null timestamps are left out, strings are never null."""
    body: dict[str, Any] = {
        "id": str(user.id),
        "aud": user.aud,
        "role": user.role,
        "email": user.email,
        "phone": user.phone,
        "app_metadata": user.app_metadata,
        "user_metadata": user.user_metadata,
        "identities": [identity_json(identity) for identity in user.identities],
        "created_at": _iso(user.created_at),
        "updated_at": _iso(user.updated_at),
        "is_anonymous": user.is_anonymous,
    }
    for name in OPTIONAL_TIMES:
        value = getattr(user, name)
        if value is not None:
            body[name] = _iso(value)
    if user.new_email:
        body["new_email"] = user.new_email
    if user.factors:
        body["factors"] = [factor_json(factor) for factor in user.factors]
    return body


def session_json(session: Session) -> dict[str, Any]:
    """The Session body the clients parse (access token, refresh token, user)."""
    body: dict[str, Any] = {
        "access_token": session.access_token,
        "token_type": session.token_type,
        "expires_in": session.expires_in,
        "expires_at": session.expires_at,
        "refresh_token": session.refresh_token,
        "user": user_json(session.user),
    }
    if session.provider_token is not None:
        body["provider_token"] = session.provider_token
    if session.provider_refresh_token is not None:
        body["provider_refresh_token"] = session.provider_refresh_token
    if session.weak_password is not None:
        body["weak_password"] = {
            "message": session.weak_password.message, "reasons": list(session.weak_password.reasons)
        }
    return body


def generated_link_json(link: GeneratedLink) -> dict[str, Any]:
    """``admin/generate_link``: the user, and the link and code an email would have carried."""
    return {
        **user_json(link.user),
        "action_link": link.action_link,
        "email_otp": link.email_otp,
        "hashed_token": link.hashed_token,
        "verification_type": link.verification_type,  # the requested type, as upstream echoes it
        "redirect_to": link.redirect_to,
    }
