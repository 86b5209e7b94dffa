"""HTTP handlers of the second factors: ``/factors`` (the signed-in user's) and the admin's."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.auth.flows.base import Client
from gatehouse.auth.forms import EnrollForm, FactorVerifyForm, read_form
from gatehouse.auth.mfa.flow import MFAFlow
from gatehouse.auth.wire import factor_json, session_json
from gatehouse.core.caller import caller
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import JSONResponse
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


__all__ = ["admin_delete_factor", "admin_factors", "challenge", "enroll", "unenroll", "verify"]
