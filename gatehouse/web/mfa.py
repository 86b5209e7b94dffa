"""The second factor in the app: setting up TOTP on the account page, recovery codes shown once,
and the second step of a log-in.

A user with a verified factor whose browser session is still ``aal1`` (a password alone) is sent
to ``/login/factor`` by every page that needs a user: the code from the authenticator app, or one
of the recovery codes, raises the session to ``aal2``. Lost both? An administrator removes the
factor (``auth.admin.mfa.deleteFactor``, or the admin API).
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse.core.errors import GatehouseError
from gatehouse.web.pages import (
    auth,
    checked_form,
    client,
    current_user,
    page,
    second_factor_pending,
    secure,
    signed_in_page,
    to_login,
)
from gatehouse.web.session import store, web_session


def _qr_src(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


async def account_mfa(request: Request) -> Response:
    """``/account/mfa``: set up an authenticator app, make new recovery codes, or remove it."""
    session = await signed_in_page(request)
    if isinstance(session, Response):
        return session
    service = auth(request)
    claims = session.claims or {}
    user = session.user
    assert user is not None  # signed_in_page read it
    verified = [f for f in user.factors if f.status == "verified"]
    context: dict[str, Any] = {"factors": verified, "codes_left": await service.mfa.recovery_codes_left(user.id)}
    if request.method == "GET":
        return page(request, "mfa.html", **context)
    data = await checked_form(request)
    if isinstance(data, Response):
        return data
    action = str(data.get("action", ""))
    try:
        if action == "start":
            enrolled = await service.mfa.enroll(claims, factor_type="totp", friendly_name=None, issuer=None,
                                                client=client(request))
            return page(request, "mfa.html", **context, setup={"factor_id": str(enrolled.id), "secret": enrolled.secret,
                                                                "qr": _qr_src(enrolled.qr_code)})
        if action == "verify":
            raised = await service.mfa.verify(claims, str(data.get("factor_id", "")),
                                              challenge_id=str((await service.mfa.challenge(
                                                  claims, str(data.get("factor_id", "")), client(request))).id),
                                              code=str(data.get("code", "")).strip(), client=client(request))
            store(web_session(request), raised, secure=secure(request))
            codes = await service.mfa.new_recovery_codes(dict(raised.claims), client(request))
            return page(request, "recovery_codes.html", codes=codes)
        if action == "codes":
            return page(request, "recovery_codes.html", codes=await service.mfa.new_recovery_codes(claims, client(request)))
        if action == "remove":
            await service.mfa.unenroll(claims, str(data.get("factor_id", "")), client(request))
            return RedirectResponse("/account?changed=mfa", status_code=303)
    except GatehouseError as error:
        return page(request, "mfa.html", status=error.status if error.status < 500 else 502, **context,
                    error=_message(error), setup=_kept_setup(data))
    return page(request, "mfa.html", status=400, **context, error="Unknown action.")


def _kept_setup(data: dict[str, Any]) -> dict[str, str] | None:
    """The set-up form again after a wrong code: same factor, same QR code (from the hidden fields)."""
    if data.get("action") != "verify" or not data.get("factor_id"):
        return None
    qr = str(data.get("qr", ""))
    return {"factor_id": str(data["factor_id"]), "secret": str(data.get("secret", ""))[:64],
            "qr": qr if qr.startswith("data:image/svg+xml;base64,") else ""}


def _message(error: GatehouseError) -> str:
    return {
        "mfa_verification_failed": "That code is not right. Type the code your app shows now.",
        "insufficient_aal": "Confirm your second factor first.",
        "over_request_rate_limit": "Too many tries. Wait a few minutes and try again.",
    }.get(error.code, error.message)


async def login_factor(request: Request) -> Response:
    """``/login/factor``: the second step of a log-in, by authenticator code or recovery code."""
    session = await current_user(request)
    if session is None:
        return to_login()
    if not second_factor_pending(session):
        return RedirectResponse("/account", status_code=303)
    if request.method == "GET":
        return page(request, "factor.html")
    data = await checked_form(request)
    if isinstance(data, Response):
        return data
    service = auth(request)
    claims = session.claims or {}
    code = str(data.get("code", "")).strip()
    try:
        if "-" in code or len(code.replace(" ", "")) == 10:
            raised = await service.mfa.use_recovery_code(claims, code, client(request))
        else:
            assert session.user is not None  # current_user read it
            factor = next(f for f in session.user.factors if f.status == "verified")
            challenge = await service.mfa.challenge(claims, factor.id, client(request))
            raised = await service.mfa.verify(claims, factor.id, challenge_id=str(challenge.id), code=code,
                                              client=client(request))
    except GatehouseError as error:
        return page(request, "factor.html", status=error.status if error.status < 500 else 502, error=_message(error))
    store(web_session(request), raised, secure=secure(request))
    return RedirectResponse("/account", status_code=303)


__all__ = ["account_mfa", "login_factor"]
