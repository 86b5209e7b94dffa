"""The ways in and out of the dashboard: the set-up link, sign-in, the TOTP step, enrolling
TOTP, and sign-out.

Outside development an administrator needs a confirmed TOTP: after the password, one without it
must enrol before anything else; one with it is asked for a code. In development TOTP is offered
(``/_/totp``), and asked for once enrolled.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.auth.mfa import totp
from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard import audit
from gatehouse.dashboard.pages import client_ip, dashboard, form, redirect, refused, render, signed_in_form, visit

ISSUER = "Gatehouse dashboard"


def _error_text(error: GatehouseError) -> str:
    return error.message if error.status != 429 else \
        f"{error.message} (retry in {error.extra.get('retry_after', 60)} seconds)"


async def login(request: Request) -> Response:
    current = await visit(request)
    if current.session is not None and current.session.stage == "full":
        return redirect(current, "/_/")
    if request.method == "GET":
        return render(request, current, "login.html", email="")
    data = await form(request, current)
    if data is None:
        return refused(request, current)
    dash, ip = dashboard(request), client_ip(request)
    email = data.get("email", "")[:254]
    try:
        admin = await dash.accounts.check_password(email, data.get("password", ""), ip=ip)
    except GatehouseError as error:
        response = render(request, current, "login.html", status=error.status, email=email, error=_error_text(error))
        if error.extra.get("retry_after"):
            response.headers["Retry-After"] = str(error.extra["retry_after"])
        return response
    if current.token:  # a session of someone else in this browser ends first
        await dash.sessions.end(current.token)
    stage = "totp" if admin.totp_confirmed else ("full" if dash.development else "enrol")
    token = await dash.sessions.start(admin.id, stage, ip=ip, user_agent=request.headers.get("user-agent", ""))
    current.set_cookies.append(dash.sessions.session_cookie(token))
    if stage == "full":
        await dash.accounts.signed_in(admin.id, ip=ip)
        return redirect(current, "/_/")
    return redirect(current, "/_/login/totp" if stage == "totp" else "/_/totp")


async def login_totp(request: Request) -> Response:
    """The code after the password, for an administrator with TOTP."""
    current = await visit(request)
    if current.session is None or current.token is None or current.session.stage != "totp":
        return redirect(current, "/_/login")
    if request.method == "GET":
        return render(request, current, "totp.html")
    data = await form(request, current)
    if data is None:
        return refused(request, current)
    dash, ip = dashboard(request), client_ip(request)
    try:
        good = await dash.accounts.verify_totp(current.session.admin.id, data.get("code", "")[:20], ip=ip)
    except GatehouseError as error:
        return render(request, current, "totp.html", status=error.status, error=_error_text(error))
    if not good:
        await audit.record(dash.accounts.pool, current.session.admin.id, "totp_failed", ip=ip)
        return render(request, current, "totp.html", status=400,
                      error="That code is wrong, expired or already used. Wait for the next one.")
    await dash.sessions.promote(current.token, "full")
    await dash.accounts.signed_in(current.session.admin.id, ip=ip)
    return redirect(current, "/_/")


async def enrol(request: Request) -> Response:
    """Set up TOTP: required (stage ``enrol``) outside development, offered in development."""
    current = await visit(request)
    session = current.session
    if session is None or current.token is None or session.stage == "totp":
        return redirect(current, "/_/login")
    if session.admin.totp_confirmed:
        return redirect(current, "/_/")
    dash, ip = dashboard(request), client_ip(request)
    secret = await dash.accounts.enrolment_secret(session.admin.id)
    link = totp.uri(secret, account=session.admin.email, issuer=ISSUER)
    qr = "data:image/svg+xml;base64," + base64.b64encode(totp.qr_svg(link).encode()).decode()
    context: dict[str, Any] = {"secret": secret, "qr": qr, "required": session.stage == "enrol"}
    if request.method == "GET":
        return render(request, current, "enrol.html", **context)
    data = await form(request, current)
    if data is None:
        return refused(request, current)
    try:
        done = await dash.accounts.confirm_totp(session.admin.id, data.get("code", "")[:20], ip=ip)
    except GatehouseError as error:
        return render(request, current, "enrol.html", status=error.status, error=_error_text(error), **context)
    if not done:
        return render(request, current, "enrol.html", status=400, error="That code is not right. Try the next one.",
                      **context)
    if session.stage == "enrol":
        await dash.sessions.promote(current.token, "full")
        await dash.accounts.signed_in(session.admin.id, ip=ip)
    return redirect(current, "/_/")


async def logout(request: Request) -> Response:
    checked = await signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    current, _ = checked
    dash = dashboard(request)
    assert current.session is not None and current.token is not None
    await dash.sessions.end(current.token)
    await audit.record(dash.accounts.pool, current.session.admin.id, "sign_out", ip=client_ip(request))
    current.set_cookies.append(dash.sessions.clear_cookie())
    return redirect(current, "/_/login")


async def setup(request: Request) -> Response:
    """The one-time link ``gatehouse serve`` prints in development when there is no administrator."""
    dash = dashboard(request)
    current = await visit(request)
    if not dash.development:
        return render(request, current, "error.html", status=404, title="Not found", message="That page does not exist.")
    token = request.path_params["token"]
    if request.method == "GET":
        if not await dash.accounts.setup_link_valid(token):
            return render(request, current, "error.html", status=404, title="Link used up",
                          message="This set-up link has expired or was already used. Restart `gatehouse serve` for a "
                          "new one, or run `gatehouse admin create EMAIL`.")
        return render(request, current, "setup.html", token=token, email="")
    data = await form(request, current)
    if data is None:
        return refused(request, current)
    email = data.get("email", "")[:254]
    if data.get("password", "") != data.get("password2", ""):
        return render(request, current, "setup.html", status=400, token=token, email=email,
                      error="The two passwords differ.")
    try:
        await dash.accounts.redeem_setup(token, email, data.get("password", ""), ip=client_ip(request))
    except GatehouseError as error:
        return render(request, current, "setup.html", status=error.status, token=token, email=email,
                      error=error.message)
    return redirect(current, "/_/login")


__all__ = ["enrol", "login", "login_totp", "logout", "setup"]
