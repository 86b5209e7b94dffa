"""HTTP handlers of ``/auth/v1``: parse, call the service, render. GoTrue's routes and shapes."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from gatehouse import __version__
from gatehouse.auth import forms
from gatehouse.auth.admin import AdminService
from gatehouse.auth.errors import render_auth_error
from gatehouse.auth.mfa import api as mfa_api
from gatehouse.auth.models import AuthCode, EmailChangeAccepted, Session
from gatehouse.auth.oauth import api as oauth_api
from gatehouse.auth.service import AuthService, Client
from gatehouse.auth.wire import generated_link_json, session_json, user_json
from gatehouse.core.caller import caller
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import ApiMount, JSONResponse, read_json
from gatehouse.services import services


def _auth(request: Request) -> AuthService:
    return services(request).auth


def _admin(request: Request) -> AdminService:
    return services(request).auth_admin


def _client(request: Request) -> Client:
    return Client(ip=request.client.host if request.client else "", user_agent=request.headers.get("user-agent", ""))


def _redirect_to(request: Request) -> str | None:
    return request.query_params.get("redirect_to") or None


def user_claims(request: Request) -> dict[str, Any]:
    """The claims of the caller's access token (verified at the edge), or GoTrue's 401/403."""
    return caller(request).signed_in().db_claims()


def require_admin(request: Request) -> None:
    """Admin routes take the secret key (as apikey or Bearer) or a service_role JWT."""
    if not caller(request).checked().is_admin:
        raise GatehouseError("not_admin", "User not allowed", status=403)


# -- public endpoints -------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return JSONResponse(
        {"version": __version__, "name": "GoTrue", "description": "Gatehouse auth: a GoTrue-compatible user management API"}
    )


async def jwks(request: Request) -> Response:
    return JSONResponse(services(request).keys.jwks(), headers={"Cache-Control": "public, max-age=600"})


async def settings(request: Request) -> Response:
    config = _auth(request).settings
    providers = {name: True for name in _auth(request).oauth.providers.names}
    return JSONResponse(
        {
            "external": {**providers, "email": True, "phone": False, "anonymous_users": config.anonymous_sign_ins},
            "disable_signup": config.disable_signup,
            "mailer_autoconfirm": config.mailer_autoconfirm,
            "phone_autoconfirm": False,
            "sms_provider": "",
            "saml_enabled": False,
        }
    )


async def signup(request: Request) -> Response:
    form = await forms.read_form(request, forms.SignupForm)
    signed_up = await _auth(request).signup.sign_up(form, _client(request), _redirect_to(request))
    return JSONResponse(session_json(signed_up) if isinstance(signed_up, Session) else user_json(signed_up))


async def token(request: Request) -> Response:
    grant = request.query_params.get("grant_type", "")
    service = _auth(request)
    data = await read_json(request)
    if grant == "password":
        session = await service.login.password(
            forms.parse(forms.PasswordGrant, data), _client(request), devices=request.cookies
        )
        response = JSONResponse(session_json(session))
        # A device cookie: this client may log in to the account later despite others' guessing.
        for header in service.devices.set_cookies(session.user.email, request.cookies):
            response.headers.append("set-cookie", header)
        return response
    if grant == "refresh_token":
        session = await service.login.refresh(forms.parse(forms.RefreshGrant, data).refresh_token, _client(request))
    elif grant == "pkce":
        session = await service.login.exchange_code(forms.parse(forms.PKCEGrant, data), _client(request))
    elif grant == "id_token":
        session = await service.oauth.id_token(forms.parse(forms.IdTokenGrant, data), _client(request))
    else:
        raise GatehouseError(
            "unsupported_grant_type", "grant_type must be password, refresh_token, pkce or id_token", status=400
        )
    return JSONResponse(session_json(session))


async def verify_post(request: Request) -> Response:
    form = await forms.read_form(request, forms.VerifyForm)
    verified = await _auth(request).verification.verify(form, _client(request))
    if isinstance(verified, EmailChangeAccepted):
        return JSONResponse({"msg": verified.message, "code": "200"})
    return JSONResponse(session_json(verified))


async def verify_get(request: Request) -> Response:
    """The link in GoTrue-style emails: verify, then 303 to ``redirect_to`` with the outcome."""
    service = _auth(request)
    params = request.query_params
    target = service.redirects.allowed(params.get("redirect_to"))
    link_type = params.get("type", "")
    try:
        link = params.get("token", "")
        if not link:
            raise GatehouseError("validation_failed", "Verify requires a token", status=400)
        outcome = await service.verification.verify_link(link, link_type, _client(request))
    except GatehouseError as error:
        denied = {"error": "access_denied" if error.status < 500 else "server_error",
                  "error_code": error.code, "error_description": error.message}
        pkce = params.get("token", "").startswith("pkce_")
        return RedirectResponse(_with(target, fragment=denied, query=denied if pkce else None), status_code=303)
    if isinstance(outcome, AuthCode):
        return RedirectResponse(_with(target, query={"code": outcome.code}), status_code=303)
    if isinstance(outcome, EmailChangeAccepted):
        return RedirectResponse(_with(target, fragment={"message": outcome.message, "sb": ""}), status_code=303)
    fragment: dict[str, Any] = {
        "access_token": outcome.access_token,
        "expires_at": outcome.expires_at,
        "expires_in": outcome.expires_in,
        "refresh_token": outcome.refresh_token,
        "token_type": outcome.token_type,
        "type": link_type,
        "sb": "",
    }
    return RedirectResponse(_with(target, fragment=fragment), status_code=303)


def _with(url: str, *, fragment: dict[str, Any] | None = None, query: dict[str, Any] | None = None) -> str:
    parts = urlsplit(url)
    new_query = parts.query
    if query:
        new_query = "&".join(filter(None, [parts.query, urlencode(query)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, new_query, urlencode(fragment) if fragment else parts.fragment))


async def otp(request: Request) -> Response:
    form = await forms.read_form(request, forms.OtpForm)
    await _auth(request).verification.send_otp(form, _client(request), _redirect_to(request))
    return JSONResponse({})


async def recover(request: Request) -> Response:
    form = await forms.read_form(request, forms.RecoverForm)
    await _auth(request).recovery.recover(form, _client(request), _redirect_to(request))
    return JSONResponse({})


async def resend(request: Request) -> Response:
    form = await forms.read_form(request, forms.ResendForm)
    await _auth(request).verification.resend(form, _client(request), _redirect_to(request))
    return JSONResponse({})


async def get_user(request: Request) -> Response:
    return JSONResponse(user_json(await _auth(request).account.current_user(user_claims(request))))


async def put_user(request: Request) -> Response:
    claims = user_claims(request)
    form = await forms.read_form(request, forms.UserUpdateForm)
    updated = await _auth(request).account.update_user(
        claims, form, _client(request), _redirect_to(request), devices=request.cookies
    )
    return JSONResponse(user_json(updated))


async def reauthenticate(request: Request) -> Response:
    await _auth(request).account.reauthenticate(user_claims(request), _client(request))
    return JSONResponse({})


async def logout(request: Request) -> Response:
    claims = user_claims(request)
    await _auth(request).login.logout(claims, request.query_params.get("scope", "global"), _client(request))
    return Response(status_code=204)


# -- admin ------------------------------------------------------------------------------------


def _page(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name) or ""
    if not value:
        return default
    if not value.isdigit():
        raise GatehouseError("validation_failed", f"{name} must be a positive number", status=400)
    return int(value)


async def admin_list_users(request: Request) -> Response:
    require_admin(request)
    page, per_page = _page(request, "page", 1), _page(request, "per_page", 50)
    found, total = await _admin(request).list_users(page, per_page)
    per_page = max(1, min(per_page, 1000))
    last = max(1, -(-total // per_page))
    links = []
    if page < last:
        links.append(f'</admin/users?page={page + 1}&per_page={per_page}>; rel="next"')
    links.append(f'</admin/users?page={last}&per_page={per_page}>; rel="last"')
    return JSONResponse(
        {"users": [user_json(user) for user in found], "aud": "authenticated"}, headers={"X-Total-Count": str(total), "Link": ", ".join(links)}
    )


def _user_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["user_id"])
    except ValueError:
        raise GatehouseError("validation_failed", "user_id must be a UUID", status=400) from None


async def admin_create_user(request: Request) -> Response:
    require_admin(request)
    form = await forms.read_form(request, forms.AdminUserForm)
    return JSONResponse(user_json(await _admin(request).create_user(form, _client(request))))


async def admin_user(request: Request) -> Response:
    require_admin(request)
    user_id = _user_id(request)
    service = _admin(request)
    if request.method == "GET":
        return JSONResponse(user_json(await service.get_user(user_id)))
    if request.method == "PUT":
        form = await forms.read_form(request, forms.AdminUserForm)
        return JSONResponse(user_json(await service.update_user(user_id, form, _client(request))))
    delete = await forms.read_form(request, forms.DeleteUserForm)
    await service.delete_user(user_id, soft=delete.should_soft_delete, client=_client(request))
    return JSONResponse({})


async def admin_generate_link(request: Request) -> Response:
    require_admin(request)
    form = await forms.read_form(request, forms.GenerateLinkForm)
    link = await _admin(request).generate_link(form, _client(request), _redirect_to(request))
    return JSONResponse(generated_link_json(link))


async def invite(request: Request) -> Response:
    require_admin(request)
    form = await forms.read_form(request, forms.InviteForm)
    return JSONResponse(user_json(await _admin(request).invite(form, _client(request), _redirect_to(request))))


routes = [
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET", "HEAD"]),
    Route("/settings", settings, methods=["GET"]),
    Route("/signup", signup, methods=["POST"]),
    Route("/token", token, methods=["POST"]),
    Route("/verify", verify_post, methods=["POST"]),
    Route("/verify", verify_get, methods=["GET"]),
    Route("/otp", otp, methods=["POST"]),
    Route("/magiclink", otp, methods=["POST"]),
    Route("/recover", recover, methods=["POST"]),
    Route("/resend", resend, methods=["POST"]),
    Route("/user", get_user, methods=["GET"]),
    Route("/user", put_user, methods=["PUT"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/reauthenticate", reauthenticate, methods=["GET"]),
    Route("/invite", invite, methods=["POST"]),
    Route("/admin/users", admin_list_users, methods=["GET"]),
    Route("/admin/users", admin_create_user, methods=["POST"]),
    Route("/admin/users/{user_id}", admin_user, methods=["GET", "PUT", "DELETE"]),
    Route("/admin/generate_link", admin_generate_link, methods=["POST"]),
    Route("/admin/users/{user_id}/factors", mfa_api.admin_factors, methods=["GET"]),
    Route("/admin/users/{user_id}/factors/{factor_id}", mfa_api.admin_delete_factor, methods=["DELETE"]),
    Route("/passkeys", mfa_api.passkey_list, methods=["GET"]),
    Route("/passkeys/registration/options", mfa_api.passkey_registration_options, methods=["POST"]),
    Route("/passkeys/registration/verify", mfa_api.passkey_registration_verify, methods=["POST"]),
    Route("/passkeys/authentication/options", mfa_api.passkey_authentication_options, methods=["POST"]),
    Route("/passkeys/authentication/verify", mfa_api.passkey_authentication_verify, methods=["POST"]),
    Route("/passkeys/{passkey_id}", mfa_api.passkey_one, methods=["PATCH", "DELETE"]),
    Route("/factors", mfa_api.enroll, methods=["POST"]),
    Route("/factors/{factor_id}/challenge", mfa_api.challenge, methods=["POST"]),
    Route("/factors/{factor_id}/verify", mfa_api.verify, methods=["POST"]),
    Route("/factors/{factor_id}", mfa_api.unenroll, methods=["DELETE"]),
    Route("/authorize", oauth_api.authorize, methods=["GET"]),
    Route("/callback", oauth_api.callback, methods=["GET", "POST"]),
    Route("/user/identities/authorize", oauth_api.link_authorize, methods=["GET"]),
    Route("/user/identities/{identity_id}", oauth_api.unlink, methods=["DELETE"]),
]

#: Paths under /auth/v1 that need no API key, as on Supabase's gateway: health, the public
#: key set, the link people open from their email, and the provider sign-in's browser navigations.
OPEN_PATHS = frozenset({
    "/auth/v1/health", "/auth/v1/.well-known/jwks.json", "/auth/v1/verify", "/auth/v1/authorize", "/auth/v1/callback",
})

MOUNT = ApiMount(
    Mount("/auth/v1", routes=routes), render_auth_error, key_required=True, token_at_edge=False, open_paths=OPEN_PATHS,
)
