"""The user-management app's route table: log in, sign up, confirm, account, avatar, sign out.

Server-rendered pages: the ways in and out are in ``web.login``, the signed-in user's pages in
``web.account``, what they share in ``web.pages``.
"""

from __future__ import annotations

from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gatehouse.web import account, login, mfa, passkeys, providers
from gatehouse.web.pages import HERE, templates

__all__ = ["routes", "templates"]  # app.py renders its error pages with the pages' templates

routes = [
    Route("/", login.home, methods=["GET"]),
    Route("/login", login.login, methods=["GET", "POST"]),
    Route("/login/factor", mfa.login_factor, methods=["GET", "POST"]),
    Route("/login/passkey/options", passkeys.sign_in_options, methods=["POST"]),
    Route("/login/passkey/verify", passkeys.sign_in_verify, methods=["POST"]),
    Route("/login/{provider}", providers.start, methods=["GET"]),
    Route("/auth/oauth", providers.landing, methods=["GET"]),
    Route("/check-email", login.check_email, methods=["GET"]),
    Route("/auth/confirm", login.confirm, methods=["GET", "POST"]),
    Route("/auth/signout", login.signout, methods=["POST"]),
    Route("/account", account.account, methods=["GET", "POST"]),
    Route("/account/avatar", account.avatar, methods=["POST"]),
    Route("/account/password", account.new_password, methods=["GET", "POST"]),
    Route("/account/mfa", mfa.account_mfa, methods=["GET", "POST"]),
    Route("/account/passkeys", passkeys.manage, methods=["POST"]),
    Route("/account/passkeys/options", passkeys.register_options, methods=["POST"]),
    Route("/account/passkeys/verify", passkeys.register_verify, methods=["POST"]),
    Route("/account/link/{provider}", providers.link, methods=["GET"]),
    Route("/account/unlink", providers.unlink, methods=["POST"]),
    Route("/forgot", login.forgot, methods=["GET", "POST"]),
    Route("/error", login.error, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
]
