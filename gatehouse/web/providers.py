"""Signing in with another provider from the app's pages, and linking one to the account.

The app is a PKCE client of its own API, as a server-rendered app on @supabase/ssr is: the
"Continue with ..." link keeps a code verifier in an HttpOnly cookie and sends the browser to
``/auth/v1/authorize`` (which binds the sign-in to the browser), and ``/auth/oauth``, where the
provider's sign-in ends, trades the code and that verifier for a session in the app's cookies.
Linking (``GATEHOUSE_MANUAL_LINKING``) and unlinking are forms on the account page.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse.auth.forms import PKCE, PKCEGrant
from gatehouse.auth.oauth.api import BINDING_COOKIE, binding_cookie
from gatehouse.core.config import Settings
from gatehouse.core.errors import GatehouseError
from gatehouse.services import services
from gatehouse.web.pages import auth, client, error_page, secure, signed_in_form, signed_in_page
from gatehouse.web.session import cookie, csrf_ok, store, web_session

VERIFIER = "gh-oauth-verifier"
#: How the pages name the built-in providers; others by their configured name.
LABELS = {"apple": "Apple", "github": "GitHub", "google": "Google", "azure": "Microsoft", "gitlab": "GitLab", "discord": "Discord",
          "keycloak": "Keycloak"}


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").title())


def enabled(request: Request) -> list[dict[str, str]]:
    """The providers the log-in and account pages offer: name and label."""
    return [{"name": name, "label": label(name)} for name in auth(request).oauth.providers.names]


def _verifier_cookie(request: Request, value: str, max_age: int = 600) -> str:
    return cookie(VERIFIER, value, max_age=max_age, secure=secure(request)).replace("Path=/", "Path=/auth/oauth")


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _landing(settings: Settings) -> str:
    return f"{settings.public_site_url}/auth/oauth"


def _same_origin(settings: Settings) -> bool:
    site, api = urlsplit(settings.public_site_url), urlsplit(settings.public_api_url)
    return (site.scheme, site.netloc) == (api.scheme, api.netloc)


async def start(request: Request) -> Response:
    """``/login/{provider}``: off to the API's /authorize, with a PKCE challenge whose verifier stays here."""
    name = request.path_params["provider"]
    if name not in auth(request).oauth.providers.names:
        return error_page(request, "That sign-in provider is not available here.", 404,
                          hint="Go back to the log-in page and choose another way in.")
    settings = services(request).settings
    verifier = secrets.token_urlsafe(48)
    query = urlencode({"provider": name, "redirect_to": _landing(settings), "code_challenge": _challenge(verifier),
                       "code_challenge_method": "s256"})
    response = RedirectResponse(f"{settings.public_api_url}/auth/v1/authorize?{query}", status_code=303)
    response.headers.append("set-cookie", _verifier_cookie(request, verifier))
    return response


async def landing(request: Request) -> Response:
    """``/auth/oauth``: where the provider's sign-in comes back; the code becomes the app's session."""
    params = request.query_params
    verifier = request.cookies.get(VERIFIER, "")
    if params.get("error"):
        return error_page(request, params.get("error_description") or "The sign-in did not complete.",
                          hint="Go back to the log-in page and try again.")
    code = params.get("code", "")
    if not code or not verifier:
        return error_page(request, "This sign-in link is incomplete or was opened in another browser.",
                          hint="Go back to the log-in page and start again.")
    try:
        signed_in = await auth(request).login.exchange_code(PKCEGrant(auth_code=code, code_verifier=verifier),
                                                             client(request))
    except (GatehouseError, ValueError):
        return error_page(request, "This sign-in has expired or was already used.",
                          hint="Go back to the log-in page and start again.")
    store(web_session(request), signed_in, secure=secure(request))
    response = RedirectResponse("/account", status_code=303)
    response.headers.append("set-cookie", _verifier_cookie(request, "", max_age=0))
    return response


async def link(request: Request) -> Response:
    """``/account/link/{provider}?csrf=...``: add a provider to the signed-in account
    (GATEHOUSE_MANUAL_LINKING). A link, not a form: the pages' ``form-action 'self'`` would stop a
    form's redirect to the provider. The CSRF token in the query string stands in for the form's."""
    session = await signed_in_page(request)
    if isinstance(session, Response):
        return session
    if not csrf_ok(web_session(request), request.query_params.get("csrf")):
        return error_page(request, "This link expired or did not come from this site.", 403,
                          hint="Go back, reload your account page and try again.")
    settings = services(request).settings
    verifier = secrets.token_urlsafe(48)
    # The binding cookie belongs to the API's origin: set it here only when the app shares it.
    bound = _same_origin(settings)
    try:
        started = await auth(request).oauth.start(
            provider=request.path_params["provider"], redirect_to=_landing(settings), scopes=None,
            form=PKCE(code_challenge=_challenge(verifier), code_challenge_method="s256"), extra={},
            binding=request.cookies.get(BINDING_COOKIE), client=client(request),
            link_claims=session.claims or {}, bind=bound,
        )
    except GatehouseError as error:
        return error_page(request, error.message, error.status if error.status < 500 else 502,
                          hint="Go back to your account page.")
    response = RedirectResponse(started.url, status_code=303)
    response.headers.append("set-cookie", _verifier_cookie(request, verifier))
    if bound:
        response.headers.append("set-cookie", binding_cookie(settings, started.binding, cross_site=started.cross_site))
    return response


async def unlink(request: Request) -> Response:
    """POST ``/account/unlink``: remove one of the account's ways in (never the last)."""
    posted = await signed_in_form(request)
    if isinstance(posted, Response):
        return posted
    session, data = posted
    try:
        await auth(request).oauth.unlink(session.claims or {}, str(data.get("identity_id", "")), client(request))
    except GatehouseError as error:
        return error_page(request, error.message, error.status, hint="Go back to your account page.")
    return RedirectResponse("/account?changed=identities", status_code=303)


def identities(user: Any) -> list[dict[str, str]]:
    """The account's ways in, as the account page lists them."""
    return [{"id": i.id, "provider": i.provider, "label": "Email and password" if i.provider == "email" else label(i.provider),
             "email": str(i.identity_data.get("email") or "")} for i in user.identities]


__all__ = ["enabled", "identities", "label", "landing", "link", "start", "unlink"]
