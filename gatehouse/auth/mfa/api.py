"""HTTP handlers of the second factors: ``/factors`` (the signed-in user's) and the admin's."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.auth.flows.base import Client
from gatehouse.auth.forms import EnrollForm, FactorVerifyForm, read_form
from gatehouse.auth.mfa.flow import MFAFlow
from gatehouse.auth.mfa.passkeys import Ceremony, Passkey, PasskeyFlow
from gatehouse.auth.wire import factor_json, session_json
from gatehouse.core.caller import caller
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import JSONResponse, read_json
from gatehouse.services import services


def _mfa(request: Request) -> MFAFlow:
    return services(request).auth.mfa


def _client(request: Request) -> Client:
    return Client(ip=request.client.host if request.client else "", user_agent=request.headers.get("user-agent", ""))


def _claims(request: Request) -> dict[str, Any]:
    return caller(request).signed_in().db_claims()


async def enroll(request: Request) -> Response:
    claims = _claims(request)
    form = await read_form(request, EnrollForm)
    enrolled = await _mfa(request).enroll(claims, factor_type=form.factor_type, friendly_name=form.friendly_name,
                                          issuer=form.issuer, client=_client(request))
    return JSONResponse({
        "id": str(enrolled.id), "type": "totp", "friendly_name": enrolled.friendly_name,
        "totp": {"qr_code": enrolled.qr_code, "secret": enrolled.secret, "uri": enrolled.uri},
    })


async def challenge(request: Request) -> Response:
    claims = _claims(request)
    challenged = await _mfa(request).challenge(claims, request.path_params["factor_id"], _client(request))
    return JSONResponse({"id": str(challenged.id), "type": challenged.factor_type, "expires_at": challenged.expires_at})


async def verify(request: Request) -> Response:
    claims = _claims(request)
    form = await read_form(request, FactorVerifyForm)
    session = await _mfa(request).verify(claims, request.path_params["factor_id"], challenge_id=form.challenge_id,
                                         code=form.code, client=_client(request))
    return JSONResponse(session_json(session))


async def unenroll(request: Request) -> Response:
    claims = _claims(request)
    removed = await _mfa(request).unenroll(claims, request.path_params["factor_id"], _client(request))
    return JSONResponse({"id": str(removed)})


def _user_id(request: Request) -> uuid.UUID:
    if not caller(request).checked().is_admin:
        raise GatehouseError("not_admin", "User not allowed", status=403)
    try:
        return uuid.UUID(request.path_params["user_id"])
    except ValueError:
        raise GatehouseError("validation_failed", "user_id must be a UUID", status=400) from None


async def admin_factors(request: Request) -> Response:
    """``auth.admin.mfa.listFactors``."""
    return JSONResponse([factor_json(f) for f in await _mfa(request).factors_of(_user_id(request))])


async def admin_delete_factor(request: Request) -> Response:
    """``auth.admin.mfa.deleteFactor``: a user who lost their second factor."""
    user_id = _user_id(request)
    removed = await _mfa(request).delete_for_admin(user_id, request.path_params["factor_id"], _client(request))
    return JSONResponse(factor_json(removed))




# -- passkeys ---------------------------------------------------------------------------------


def _passkeys(request: Request) -> PasskeyFlow:
    return services(request).auth.passkeys


def _passkey_json(passkey: Passkey) -> dict[str, Any]:
    body: dict[str, Any] = {"id": passkey.id, "created_at": passkey.created_at.isoformat()}
    if passkey.friendly_name:
        body["friendly_name"] = passkey.friendly_name
    if passkey.last_used_at is not None:
        body["last_used_at"] = passkey.last_used_at.isoformat()
    return body


def _ceremony_json(ceremony: Ceremony) -> dict[str, Any]:
    return {"challenge_id": str(ceremony.challenge_id), "options": ceremony.options, "expires_at": ceremony.expires_at}


async def _ceremony_body(request: Request) -> tuple[str, Any]:
    data = await read_json(request)
    challenge_id, credential = data.get("challenge_id"), data.get("credential")
    if not isinstance(challenge_id, str) or not challenge_id:
        raise GatehouseError("validation_failed", "challenge_id is required", status=400)
    if not isinstance(credential, dict):
        raise GatehouseError("validation_failed", "credential is required", status=400)
    return challenge_id, credential


async def passkey_registration_options(request: Request) -> Response:
    ceremony = await _passkeys(request).registration_options(_claims(request), _client(request))
    return JSONResponse(_ceremony_json(ceremony))


async def passkey_registration_verify(request: Request) -> Response:
    claims = _claims(request)
    challenge_id, credential = await _ceremony_body(request)
    passkey = await _passkeys(request).registration_verify(claims, challenge_id, credential, _client(request))
    return JSONResponse(_passkey_json(passkey))


async def passkey_authentication_options(request: Request) -> Response:
    return JSONResponse(_ceremony_json(await _passkeys(request).authentication_options(_client(request))))


async def passkey_authentication_verify(request: Request) -> Response:
    challenge_id, credential = await _ceremony_body(request)
    session = await _passkeys(request).authentication_verify(challenge_id, credential, _client(request))
    return JSONResponse(session_json(session))


async def passkey_list(request: Request) -> Response:
    return JSONResponse([_passkey_json(p) for p in await _passkeys(request).of_user(_claims(request))])


async def passkey_one(request: Request) -> Response:
    """PATCH renames (``{friendly_name}``), DELETE removes (204)."""
    claims = _claims(request)
    passkey_id = request.path_params["passkey_id"]
    if request.method == "DELETE":
        await _passkeys(request).delete(claims, passkey_id, _client(request))
        return Response(status_code=204)
    data = await read_json(request)
    name = data.get("friendly_name")
    renamed = await _passkeys(request).rename(claims, passkey_id, name if isinstance(name, str) else "", _client(request))
    return JSONResponse(_passkey_json(renamed))


__all__ = [
    "admin_delete_factor", "admin_factors", "challenge", "enroll", "passkey_authentication_options",
    "passkey_authentication_verify", "passkey_list", "passkey_one", "passkey_registration_options",
    "passkey_registration_verify", "unenroll", "verify",
]
