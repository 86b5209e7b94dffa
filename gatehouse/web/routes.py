"""The user-management app: log in, sign up, confirm, account, avatar, sign out. Server-rendered.

Pages call the same services as the HTTP APIs, in-process: ``AuthService`` for accounts,
``gatehouse.profiles`` for the profile (run as the user: RLS decides), and
``StorageService`` for the avatar, as the signed-in user.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gatehouse import profiles
from gatehouse.auth.forms import PasswordGrant, RecoverForm, SignupForm, UserUpdateForm, VerifyForm
from gatehouse.auth.links import VERIFY_TYPES
from gatehouse.auth.models import Session
from gatehouse.auth.service import AuthService, Client
from gatehouse.core.errors import GatehouseError
from gatehouse.profiles import Profile, ProfileError
from gatehouse.services import services
from gatehouse.web import avatars
from gatehouse.web.forms import ProfileForm, same_site_path
from gatehouse.web.session import WebSession, clear, csrf_ok, store, web_session

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
PAGE_CSP = (
    "default-src 'self'; img-src 'self' {storage}blob: data:; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": PAGE_CSP.format(storage=""),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def _auth(request: Request) -> AuthService:
    return services(request).auth


def _client(request: Request) -> Client:
    return Client(ip=request.client.host if request.client else "", user_agent=request.headers.get("user-agent", ""))


def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    session = web_session(request)
    settings = services(request).settings
    context.setdefault("user_id", session.user_id)
    return templates.TemplateResponse(
        request, name, {"csrf": session.csrf, "development": settings.environment == "development", **context},
        status_code=status, headers=_page_headers(settings.storage_public_url),
    )


def _page_headers(storage_url: str | None) -> dict[str, str]:
    """The pages' headers; images may also come from the storage origin when there is one."""
    if not storage_url:
        return PAGE_HEADERS
    return PAGE_HEADERS | {"Content-Security-Policy": PAGE_CSP.format(storage=f"{storage_url} ")}


def _secure(request: Request) -> bool:
    return bool(services(request).settings.public_site_url.startswith("https://"))


def error_page(request: Request, message: str, status: int = 400, *, hint: str = "") -> Response:
    return page(request, "error.html", status=status, message=message, hint=hint)


async def _form(request: Request) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=20)
    return dict(form)


async def _checked_form(request: Request) -> dict[str, Any] | Response:
    data = await _form(request)
    if not csrf_ok(web_session(request), data.get("csrf")):
        return error_page(request, "This form expired or did not come from this site.", 403,
                          hint="Go back, reload the page and send it again.")
    return data


# -- pages ---------------------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    return RedirectResponse("/account" if web_session(request).claims else "/login", status_code=303)


async def login(request: Request) -> Response:
    if request.method == "GET":
        return page(request, "login.html", email="", message=request.query_params.get("message", ""))
    data = await _checked_form(request)
    if isinstance(data, Response):
        return data
    email, password = str(data.get("email", "")).strip(), str(data.get("password", ""))
    action = data.get("action", "login")
    service = _auth(request)
    try:
        if action == "signup":
            await service.signup.sign_up(SignupForm(email=email, password=password), _client(request), None)
            return RedirectResponse("/check-email?" + urlencode({"email": email}), status_code=303)
        signed_in = await service.login.password(
            PasswordGrant(email=email, password=password), _client(request), devices=request.cookies
        )
    except GatehouseError as error:
        status = error.status if error.status == 429 or error.status >= 500 else 400
        response = page(request, "login.html", status=status, email=email, error=_login_message(error))
        if error.extra.get("retry_after"):
            response.headers["Retry-After"] = str(error.extra["retry_after"])
        return response
    session = web_session(request)
    store(session, signed_in, secure=_secure(request))
    # This browser has now logged in to the account: others' guessing will not slow it down.
    session.set_cookies.append(service.devices.set_cookie(signed_in.user.email))
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
    source = request.query_params if request.method == "GET" else await _form(request)
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
        result = await _auth(request).verification.verify(
            VerifyForm(type=link_type, token_hash=token_hash), _client(request)
        )
    except GatehouseError:
        return error_page(request, "This link has expired or was already used.",
                          hint="Log in, or ask for a new link from the log-in page.")
    if not isinstance(result, Session):  # the first of two email-change confirmations
        return page(request, "message.html", title="Almost done",
                    message="Now open the confirmation link we sent to your other address.")
    store(web_session(request), result, secure=_secure(request))
    target = "/account/password" if link_type == "recovery" else next_path
    return RedirectResponse(target, status_code=303)


async def _current_user(request: Request) -> WebSession | None:
    """The signed-in user, if the token is good and the session still exists."""
    session = web_session(request)
    if not session.claims:
        return None
    try:
        await _auth(request).account.current_user(session.claims)
    except GatehouseError:
        clear(session, secure=_secure(request))
        return None
    return session


def _to_login() -> Response:
    return RedirectResponse("/login", status_code=303)


async def account(request: Request) -> Response:
    session = await _current_user(request)
    if session is None:
        return _to_login()
    database, user_id = services(request).database, uuid.UUID(session.user_id)
    profile = await profiles.read(database, session.claims, user_id) or Profile(user_id)
    form = ProfileForm(full_name=profile.full_name or "", username=profile.username or "",
                       website=profile.website or "")
    notice = {"password": "Password changed.", "profile": "Profile updated."}.get(
        request.query_params.get("changed", ""), ""
    )
    if request.method == "POST":
        data = await _checked_form(request)
        if isinstance(data, Response):
            return data
        form = ProfileForm.parse({k: str(v) for k, v in data.items()})
        if not form.errors:
            try:
                await profiles.save_details(database, session.claims, user_id, **form.values())
                # Post/Redirect/Get: reloading the page must not send the form again
                return RedirectResponse("/account?changed=profile", status_code=303)
            except ProfileError as error:
                if not form.refused(error):
                    raise
    return page(
        request, "account.html", status=400 if form.errors else 200, form=form, notice=notice,
        email=session.claims.get("email", "") if session.claims else "",
        avatar=avatars.image_src(profile.avatar_url, avatars.SIZE,
                                 origin=services(request).settings.storage_public_url or ""),
        avatar_size=avatars.SIZE,
        avatar_error=request.query_params.get("avatar_error", ""),
        avatar_notice="Photo updated." if request.query_params.get("avatar") == "updated" else "",
    )


async def avatar(request: Request) -> Response:
    session = await _current_user(request)
    if session is None:
        return _to_login()
    data = await _checked_form(request)
    if isinstance(data, Response):
        return data
    try:
        await avatars.replace(services(request).storage.objects, services(request).database, session.claims or {},
                              uuid.UUID(session.user_id), data.get("avatar"))
    except avatars.AvatarRefused as refused:
        return RedirectResponse("/account?" + urlencode({"avatar_error": refused.message}), status_code=303)
    return RedirectResponse("/account?avatar=updated", status_code=303)


async def signout(request: Request) -> Response:
    data = await _checked_form(request)
    if isinstance(data, Response):
        return data
    session = web_session(request)
    if session.claims:
        try:
            await _auth(request).login.logout(session.claims, "local", _client(request))
        except GatehouseError:
            pass  # already ended elsewhere: signing out is done either way
    clear(session, secure=_secure(request))
    return RedirectResponse("/login", status_code=303)


async def forgot(request: Request) -> Response:
    if request.method == "GET":
        return page(request, "forgot.html", email="")
    data = await _checked_form(request)
    if isinstance(data, Response):
        return data
    email = str(data.get("email", "")).strip()
    try:
        await _auth(request).recovery.recover(RecoverForm(email=email), _client(request), None)
    except GatehouseError as error:
        return page(request, "forgot.html", status=400, email=email, error=error.message)
    return RedirectResponse("/check-email?" + urlencode({"email": email, "reason": "recovery"}), status_code=303)


async def new_password(request: Request) -> Response:
    session = await _current_user(request)
    if session is None:
        return _to_login()
    if request.method == "GET":
        return page(request, "password.html")
    data = await _checked_form(request)
    if isinstance(data, Response):
        return data
    password = str(data.get("password", ""))
    try:
        await _auth(request).account.update_user(
            session.claims or {}, UserUpdateForm(password=password), _client(request), None
        )
    except GatehouseError as error:
        return page(request, "password.html", status=400, error=error.message)
    return RedirectResponse("/account?changed=password", status_code=303)


async def error(request: Request) -> Response:
    return error_page(request, request.query_params.get("message", "Something went wrong."),
                      hint="Go back to the log-in page and try again.")


routes = [
    Route("/", home, methods=["GET"]),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/check-email", check_email, methods=["GET"]),
    Route("/auth/confirm", confirm, methods=["GET", "POST"]),
    Route("/auth/signout", signout, methods=["POST"]),
    Route("/account", account, methods=["GET", "POST"]),
    Route("/account/avatar", avatar, methods=["POST"]),
    Route("/account/password", new_password, methods=["GET", "POST"]),
    Route("/forgot", forgot, methods=["GET", "POST"]),
    Route("/error", error, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
]
