"""GoTrue's JSON for users and sessions, rendered from the flows' typed values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from gatehouse.auth.flows.signup import lookalike_user
from gatehouse.auth.models import Session, User, WeakPassword
from gatehouse.auth.wire import session_json, user_json

NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def row(**changes: Any) -> dict[str, Any]:
    """An ``auth.users`` row with its identities, as ``users.by_id`` reads it: a new sign-up."""
    user_id = uuid.uuid4()
    stamp = NOW.isoformat()
    base: dict[str, Any] = {
        "id": user_id, "aud": "authenticated", "role": "authenticated", "email": "ada@example.com", "phone": None,
        "encrypted_password": "$argon2id$secret", "raw_app_meta_data": {"provider": "email", "providers": ["email"]},
        "raw_user_meta_data": {"full_name": "Ada"}, "created_at": NOW, "updated_at": NOW, "is_anonymous": False,
        "email_change": "", "email_confirmed_at": None, "phone_confirmed_at": None, "confirmed_at": None,
        "confirmation_sent_at": NOW, "recovery_sent_at": None, "email_change_sent_at": None, "invited_at": None,
        "last_sign_in_at": None, "banned_until": None, "deleted_at": None,
        "identities": [{
            "id": str(uuid.uuid4()), "provider_id": str(user_id), "user_id": str(user_id), "provider": "email",
            "identity_data": {"sub": str(user_id), "email": "ada@example.com", "email_verified": False,
                              "phone_verified": False},
            "email": "ada@example.com", "last_sign_in_at": stamp, "created_at": stamp, "updated_at": stamp,
        }],
    }
    return base | changes


def test_a_user_has_no_nulls_for_strings_and_leaves_out_null_times() -> None:
    body = user_json(User.from_row(row()))
    assert body["phone"] == ""
    assert body["confirmation_sent_at"] == NOW.isoformat()
    assert "email_confirmed_at" not in body and "new_email" not in body
    assert "encrypted_password" not in body
    assert body["identities"][0]["identity_id"] != body["identities"][0]["id"] == body["id"]


def test_a_pending_email_change_is_new_email() -> None:
    assert user_json(User.from_row(row(email_change="new@example.com")))["new_email"] == "new@example.com"


def test_the_answer_for_a_taken_address_has_a_new_sign_ups_keys_in_its_order() -> None:
    real = user_json(User.from_row(row()))
    fake = user_json(lookalike_user("ada@example.com", {"full_name": "Ada"}))
    assert list(fake) == list(real)
    assert list(fake["identities"][0]) == list(real["identities"][0])
    assert list(fake["identities"][0]["identity_data"]) == list(real["identities"][0]["identity_data"])


def test_a_session_renders_its_tokens_user_and_weak_password_last() -> None:
    user = User.from_row(row())
    session = Session(
        access_token="a.b.c", refresh_token="r", expires_in=3600, expires_at=1_714_557_600, user=user,
        claims={"sub": str(user.id)}, weak_password=WeakPassword("Too short", ("length",)),
    )
    body = session_json(session)
    assert list(body) == [
        "access_token", "token_type", "expires_in", "expires_at", "refresh_token", "user", "weak_password"
    ]
    assert body["token_type"] == "bearer"
    assert body["weak_password"] == {"message": "Too short", "reasons": ["length"]}
    assert "claims" not in body
