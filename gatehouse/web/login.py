"""The ways in and out: log in, sign up, confirm an emailed link, forgotten password, sign out.

Each page calls ``AuthService`` in-process, as the GoTrue API does, and keeps the resulting
session in the browser's cookies (``web.session``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse.auth.forms import PasswordGrant, RecoverForm, SignupForm, VerifyForm
from gatehouse.auth.links import VERIFY_TYPES
from gatehouse.auth.models import Session
from gatehouse.core.errors import GatehouseError
from gatehouse.web import providers
from gatehouse.web.forms import same_site_path
from gatehouse.web.pages import auth, checked_form, client, error_page, page, read_form, secure
from gatehouse.web.session import clear, csrf_ok, store, web_session


async def home(request: Request) -> Response:
    return RedirectResponse("/account" if web_session(request).claims else "/login", status_code=303)


async def login(request: Request) -> Response:
    if request.method == "GET":
        return page(request, "login.html", email="", message=request.query_params.get("message", ""),
                    providers=providers.enabled(request))
    data = await checked_form(request)
    if isinstance(data, Response):
        return data
    email, password = str(data.get("email", "")).strip(), str(data.get("password", ""))
    action = data.get("action", "login")
    service = auth(request)
    try:
        if action == "signup":
            await service.signup.sign_up(SignupForm(email=email, password=password), client(request), None)
            return RedirectResponse("/check-email?" + urlencode({"email": email}), status_code=303)
        signed_in = await service.login.password(
            PasswordGrant(email=email, password=password), client(request), devices=request.cookies
        )
    except GatehouseError as error:
        status = error.status if error.status == 429 or error.status >= 500 else 400
        response = page(request, "login.html", status=status, email=email, error=_login_message(error),
                        providers=providers.enabled(request))
        if error.extra.get("retry_after"):
            response.headers["Retry-After"] = str(error.extra["retry_after"])
        return response
    session = web_session(request)
    store(session, signed_in, secure=secure(request))
    # This browser has now logged in to the account: others' guessing will not slow it down.
    session.set_cookies += service.devices.set_cookies(signed_in.user.email, request.cookies)
    return RedirectResponse("/account", status_code=303)


def _login_message(error: GatehouseError) -> str:
    return {
        "invalid_credentials": "That email and password do not match an account.",
        "email_not_confirmed": "Confirm your email first: open the link we sent you.",
        "weak_password": error.message,
        "over_request_rate_limit":
            f"Too many attempts. Wait {error.extra.get('retry_after', 60)} seconds and try again.",
        "user_banned": "This account is blocked. Contact the site's administrator.",
    }.get(error.code, error.message)


async def check_email(request: Request) -> Response:
    return page(request, "check_email.html", email=request.query_params.get("email", ""))


async def confirm(request: Request) -> Response:
    """GET shows a one-click page (mail scanners that open links use nothing up); POST verifies."""
    source = request.query_params if request.method == "GET" else await read_form(request)
    token_hash, link_type = str(source.get("token_hash", "")), str(source.get("type", ""))
    next_path = same_site_path(str(source.get("next", "") or ""), default="/account")
    if not token_hash or link_type not in VERIFY_TYPES:
        return error_page(request, "This confirmation link is incomplete.", hint="Open the link from your email again.")
    if request.method == "GET":
        return page(request, "confirm.html", token_hash=token_hash, link_type=link_type, next=next_path)
    if not csrf_ok(web_session(request), source.get("csrf")):
        return error_page(request, "This form expired or did not come from this site.", 403,
                          hint="Open the link from your email again.")
    try:
        result = await auth(request).verification.verify(
            VerifyForm(type=link_type, token_hash=token_hash), client(request)
        )
    except GatehouseError:
        return error_page(request, "This link has expired or was already used.",
                          hint="Log in, or ask for a new link from the log-in page.")
    if not isinstance(result, Session):  # the first of two email-change confirmations
        return page(request, "message.html", title="Almost done",
                    message="Now open the confirmation link we sent to your other address.")
    store(web_session(request), result, secure=secure(request))
    target = "/account/password" if link_type == "recovery" else next_path
    return RedirectResponse(target, status_code=303)


async def signout(request: Request) -> Response:
    data = await checked_form(request)
    if isinstance(data, Response):
        return data
    session = web_session(request)
    if session.claims:
        try:
            await auth(request).login.logout(session.claims, "local", client(request))
        except GatehouseError:
            pass  # already ended elsewhere: signing out is done either way
    clear(session, secure=secure(request))
    return RedirectResponse("/login", status_code=303)


async def forgot(request: Request) -> Response:
    if request.method == "GET":
        return page(request, "forgot.html", email="")
    data = await checked_form(request)
    if isinstance(data, Response):
        return data
    email = str(data.get("email", "")).strip()
    try:
        await auth(request).recovery.recover(RecoverForm(email=email), client(request), None)
    except GatehouseError as error:
        return page(request, "forgot.html", status=400, email=email, error=error.message)
    return RedirectResponse("/check-email?" + urlencode({"email": email, "reason": "recovery"}), status_code=303)


async def error(request: Request) -> Response:
    """An error page for a message passed in the query string (``/error?message=...``), shown as text."""
    return error_page(request, request.query_params.get("message", "Something went wrong."),
                      hint="Go back to the log-in page and try again.")
