"""Request bodies of ``/auth/v1``: parsed once, typed, with GoTrue's error codes for bad input.

Unknown keys are ignored (the clients send extras such as ``gotrue_meta_security``).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import read_json

Form = TypeVar("Form", bound=BaseModel)
MAX_EMAIL = 255


class _Form(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PKCE(_Form):
    code_challenge: str | None = Field(default=None, max_length=128)
    code_challenge_method: str | None = Field(default=None, max_length=16)


class SignupForm(PKCE):
    email: str | None = None
    phone: str | None = None
    password: str | None = None
    data: dict[str, Any] | None = None


class PasswordGrant(_Form):
    email: str | None = None
    phone: str | None = None
    password: str | None = None


class RefreshGrant(_Form):
    refresh_token: str = Field(min_length=1, max_length=512)


class PKCEGrant(_Form):
    auth_code: str = Field(min_length=1, max_length=512)
    code_verifier: str = Field(min_length=1, max_length=512)


class IdTokenGrant(_Form):
    """``signInWithIdToken``: an ID token from a provider's own SDK (native or one-tap sign-in)."""

    provider: str = Field(min_length=1, max_length=64)
    id_token: str = Field(min_length=1, max_length=16_384)
    access_token: str | None = Field(default=None, max_length=16_384)
    nonce: str | None = Field(default=None, max_length=512)


class EnrollForm(_Form):
    factor_type: str = Field(default="", max_length=32)
    friendly_name: str | None = Field(default=None, max_length=255)
    issuer: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=32)


class FactorVerifyForm(_Form):
    challenge_id: str = Field(default="", max_length=64)
    code: str = Field(default="", max_length=32)


class VerifyForm(_Form):
    type: str
    token_hash: str | None = Field(default=None, max_length=256)
    token: str | None = Field(default=None, max_length=256)
    email: str | None = None
    phone: str | None = None
    redirect_to: str | None = Field(default=None, max_length=2048)


class OtpForm(PKCE):
    email: str | None = None
    phone: str | None = None
    data: dict[str, Any] | None = None
    create_user: bool = True


class RecoverForm(PKCE):
    email: str | None = None


class ResendForm(_Form):
    type: str
    email: str | None = None
    phone: str | None = None


class UserUpdateForm(PKCE):
    email: str | None = None
    phone: str | None = None
    password: str | None = None
    current_password: str | None = None
    nonce: str | None = None
    data: dict[str, Any] | None = None


class AdminUserForm(_Form):
    id: uuid.UUID | None = None
    email: str | None = None
    phone: str | None = None
    password: str | None = None
    password_hash: str | None = Field(default=None, max_length=255)
    email_confirm: bool | None = None
    phone_confirm: bool | None = None
    user_metadata: dict[str, Any] | None = None
    app_metadata: dict[str, Any] | None = None
    role: str | None = Field(default=None, max_length=255)
    ban_duration: str | None = Field(default=None, max_length=32)


class GenerateLinkForm(_Form):
    type: Literal["signup", "invite", "magiclink", "recovery", "email_change_current", "email_change_new"]
    email: str
    password: str | None = None
    new_email: str | None = None
    data: dict[str, Any] | None = None
    redirect_to: str | None = Field(default=None, max_length=2048)


class InviteForm(_Form):
    email: str
    data: dict[str, Any] | None = None


class DeleteUserForm(_Form):
    should_soft_delete: bool = False


def parse(form: type[Form], data: dict[str, Any]) -> Form:
    try:
        return form.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise GatehouseError("validation_failed", f"Invalid {field}: {first['msg']}", status=400) from None


async def read_form(request: Request, form: type[Form]) -> Form:
    data: dict[str, Any] = await read_json(request)
    return parse(form, data)


def normalize_email(value: str | None, *, required: bool = True) -> str | None:
    """Lower-cased, syntax-checked (no DNS look-ups) email, or a 400 ``email_address_invalid``."""
    if value is None or not value.strip():
        if required:
            raise GatehouseError("validation_failed", "An email address is required", status=400)
        return None
    value = value.strip()
    if len(value) > MAX_EMAIL:
        raise GatehouseError("email_address_invalid", "Email address is too long", status=400)
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise GatehouseError(
            "email_address_invalid", f'Email address "{value}" is invalid: {exc}', status=400
        ) from None
    return checked.normalized.lower()
