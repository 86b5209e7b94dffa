"""HTTP handlers of the provider sign-in: ``/authorize``, ``/callback`` and the identity routes.

``/authorize`` and ``/callback`` are browser navigations: they take no API key, answer with
redirects, and carry every refusal back to ``redirect_to`` as the upstream server does (``error``,
``error_code``, ``error_description`` in the query and the fragment). The identity routes are API
calls of a signed-in user.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse.auth.flows.base import Client
from gatehouse.auth.forms import PKCE
from gatehouse.auth.models import AuthCode, Session
from gatehouse.auth.oauth.flow import Finished, Started
from gatehouse.auth.service import AuthService
from gatehouse.core.caller import caller
from gatehouse.core.config import Settings
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import JSONResponse
from gatehouse.services import services

#: The cookie that binds a sign-in's state to the browser that started it.
BINDING_COOKIE = "gh-oauth-binding"

#: The OAuth 2.0 ``error`` for a refusal of each status, as the upstream server maps them.
OAUTH_ERRORS = {400: "invalid_request", 401: "unauthorized_client", 403: "access_denied", 422: "invalid_request",
                429: "temporarily_unavailable"}
#: Refusals that are the person's own account's: ``access_denied`` whatever their status.
DENIED = frozenset({"signup_disabled", "user_banned", "user_not_found"})


def _auth(request: Request) -> AuthService:
    return services(request).auth


def _client(request: Request) -> Client:
    return Client(ip=request.client.host if request.client else "", user_agent=request.headers.get("user-agent", ""))


def _with(url: str, *, query: dict[str, Any] | None = None, fragment: dict[str, Any] | None = None) -> str:
    parts = urlsplit(url)
    new_query = "&".join(filter(None, [parts.query, urlencode(query)])) if query else parts.query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, new_query, urlencode(fragment) if fragment else parts.fragment))


def binding_cookie(settings: Settings, value: str, *, cross_site: bool = False) -> str:
    """HttpOnly and scoped to the callback's path. SameSite=Lax: sent on the provider's redirect
    back (a top-level GET), never on another site's requests; Secure when the API is served over
    https. ``cross_site`` (providers that come back with a cross-site POST, Apple's form_post):
    SameSite=None, which browsers accept only with Secure."""
    api = urlsplit(settings.public_api_url)
    path = api.path.rstrip("/") + "/auth/v1/callback"
    parts = [f"{BINDING_COOKIE}={value}", f"Path={path}", "Max-Age=600", "HttpOnly",
             "SameSite=None" if cross_site else "SameSite=Lax"]
    if api.scheme == "https" or cross_site:
        parts.append("Secure")
    return "; ".join(parts)


def _started(request: Request, started: Started, *, skip_redirect: bool) -> Response:
    response: Response
    if skip_redirect:
        response = JSONResponse({"url": started.url})
    else:
        response = RedirectResponse(started.url, status_code=302)
    response.headers.append("set-cookie", binding_cookie(_auth(request).settings, started.binding,
                                                         cross_site=started.cross_site))
    response.headers["Cache-Control"] = "no-store"
    return response


def _skip_redirect(request: Request) -> bool:
    return request.query_params.get("skip_http_redirect", "").lower() == "true"


def _challenge(request: Request) -> PKCE:
    params = request.query_params
    try:
        return PKCE(code_challenge=params.get("code_challenge") or None,
                    code_challenge_method=params.get("code_challenge_method") or None)
    except ValueError:
        raise GatehouseError("validation_failed", "code_challenge must be at most 128 characters", status=400) from None


async def authorize(request: Request) -> Response:
    """``signInWithOAuth``: send the browser to the provider."""
    params = request.query_params
    started = await _auth(request).oauth.start(
        provider=params.get("provider"), redirect_to=params.get("redirect_to"), scopes=params.get("scopes"),
        form=_challenge(request), extra=dict(params), binding=request.cookies.get(BINDING_COOKIE),
        client=_client(request),
    )
    return _started(request, started, skip_redirect=_skip_redirect(request))


async def link_authorize(request: Request) -> Response:
    """``linkIdentity``: the provider's URL for adding it to the signed-in user's account."""
    claims = caller(request).signed_in().db_claims()
    params = request.query_params
    skip = _skip_redirect(request)
    started = await _auth(request).oauth.start(
        provider=params.get("provider"), redirect_to=params.get("redirect_to"), scopes=params.get("scopes"),
        form=_challenge(request), extra=dict(params), binding=request.cookies.get(BINDING_COOKIE),
        client=_client(request), link_claims=claims, bind=not skip,
    )
    return _started(request, started, skip_redirect=skip)


async def callback(request: Request) -> Response:
    """The provider sends the browser back here: finish, then back to ``redirect_to``."""
    params: dict[str, str] = dict(request.query_params)
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=32)
        params |= {key: value for key, value in form.items() if isinstance(value, str)}
    finished = await _auth(request).oauth.finish(params, request.cookies.get(BINDING_COOKIE), _client(request))
    response = RedirectResponse(redirect_url(finished), status_code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect_url(finished: Finished) -> str:
    """``redirect_to`` with the outcome: ``?code=`` (PKCE), the session in the fragment, or the refusal."""
    outcome = finished.outcome
    if isinstance(outcome, AuthCode):
        return _with(finished.redirect_to, query={"code": outcome.code})
    if isinstance(outcome, Session):
        fragment: dict[str, Any] = {
            "access_token": outcome.access_token, "expires_at": outcome.expires_at, "expires_in": outcome.expires_in,
            "refresh_token": outcome.refresh_token, "token_type": outcome.token_type,
        }
        tokens = finished.provider_tokens
        if tokens is not None:
            fragment["provider_token"] = tokens.access_token
            if tokens.refresh_token:
                fragment["provider_refresh_token"] = tokens.refresh_token
        return _with(finished.redirect_to, fragment={**fragment, "sb": ""})
    error = outcome.extra.get("oauth_error") or (
        "access_denied" if outcome.code in DENIED else OAUTH_ERRORS.get(outcome.status, "server_error"))
    refusal = {"error": error, "error_code": outcome.code, "error_description": outcome.message}
    return _with(finished.redirect_to, query=refusal, fragment={**refusal, "sb": ""})


async def unlink(request: Request) -> Response:
    """``unlinkIdentity``."""
    claims = caller(request).signed_in().db_claims()
    await _auth(request).oauth.unlink(claims, request.path_params["identity_id"], _client(request))
    return JSONResponse({})


__all__ = ["BINDING_COOKIE", "authorize", "binding_cookie", "callback", "link_authorize", "redirect_url", "unlink"]
