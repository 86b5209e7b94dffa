"""Passkeys in the app: add, rename and remove them on the account page, and sign in with one.

The WebAuthn ceremony runs in the browser (``static/passkeys.js``: the one script of the pages,
no build step); these routes are its same-origin JSON calls, made with the page's session
cookies and its CSRF token in ``X-CSRF-Token``. They call the same service as ``/auth/v1/passkeys``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import JSONResponse, read_json
from gatehouse.web.pages import auth, client, error_page, secure, signed_in_form, signed_in_page
from gatehouse.web.session import WebSession, csrf_ok, store, web_session


def _refused(error: GatehouseError) -> Response:
    return JSONResponse({"code": error.code, "message": error.message}, status_code=error.status)


def _csrf_refused(request: Request) -> Response | None:
    if csrf_ok(web_session(request), request.headers.get("x-csrf-token")):
        return None
    return JSONResponse({"code": "csrf", "message": "Reload the page and try again."}, status_code=403)


async def _answer(request: Request) -> tuple[str, dict[str, Any]]:
    data = await read_json(request)
    challenge_id, credential = data.get("challenge_id"), data.get("credential")
    if not isinstance(challenge_id, str) or not isinstance(credential, dict):
        raise GatehouseError("validation_failed", "challenge_id and credential are required", status=400)
    return challenge_id, credential


async def _signed_in_call(request: Request) -> WebSession | Response:
    """The signed-in user of a JSON call from the account page, its CSRF header checked."""
    session = await signed_in_page(request)
    if isinstance(session, Response):
        return JSONResponse({"code": "signed_out", "message": "Sign in again."}, status_code=401)
    return _csrf_refused(request) or session


async def register_options(request: Request) -> Response:
    session = await _signed_in_call(request)
    if isinstance(session, Response):
        return session
    try:
        ceremony = await auth(request).passkeys.registration_options(session.claims or {}, client(request))
    except GatehouseError as error:
        return _refused(error)
    return JSONResponse({"challenge_id": str(ceremony.challenge_id), "options": ceremony.options})


async def register_verify(request: Request) -> Response:
    session = await _signed_in_call(request)
    if isinstance(session, Response):
        return session
    try:
        challenge_id, credential = await _answer(request)
        passkey = await auth(request).passkeys.registration_verify(session.claims or {}, challenge_id, credential,
                                                                  client(request))
    except GatehouseError as error:
        return _refused(error)
    return JSONResponse({"id": passkey.id})


async def sign_in_options(request: Request) -> Response:
    if (refused := _csrf_refused(request)) is not None:
        return refused
    try:
        ceremony = await auth(request).passkeys.authentication_options(client(request))
    except GatehouseError as error:
        return _refused(error)
    return JSONResponse({"challenge_id": str(ceremony.challenge_id), "options": ceremony.options})


async def sign_in_verify(request: Request) -> Response:
    if (refused := _csrf_refused(request)) is not None:
        return refused
    try:
        challenge_id, credential = await _answer(request)
        signed_in = await auth(request).passkeys.authentication_verify(challenge_id, credential, client(request))
    except GatehouseError as error:
        return _refused(error)
    store(web_session(request), signed_in, secure=secure(request))
    return JSONResponse({"redirect": "/account"})


async def manage(request: Request) -> Response:
    """POST ``/account/passkeys``: rename (``name``) or remove (``action=delete``) one."""
    posted = await signed_in_form(request)
    if isinstance(posted, Response):
        return posted
    session, data = posted
    passkeys = auth(request).passkeys
    passkey_id = str(data.get("id", ""))
    try:
        if data.get("action") == "delete":
            await passkeys.delete(session.claims or {}, passkey_id, client(request))
        else:
            await passkeys.rename(session.claims or {}, passkey_id, str(data.get("name", "")), client(request))
    except GatehouseError as error:
        return error_page(request, error.message, error.status, hint="Go back to your account page.")
    return RedirectResponse("/account?changed=passkeys", status_code=303)


__all__ = ["manage", "register_options", "register_verify", "sign_in_options", "sign_in_verify"]
