"""The dashboard's route table, mounted at ``/_`` by ``create_app``."""

from __future__ import annotations

from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gatehouse.dashboard import actions, health, mail, signin, users
from gatehouse.dashboard.pages import HERE

routes = [
    Route("/", users.overview, methods=["GET"]),
    Route("/login", signin.login, methods=["GET", "POST"]),
    Route("/login/totp", signin.login_totp, methods=["GET", "POST"]),
    Route("/totp", signin.enrol, methods=["GET", "POST"]),
    Route("/logout", signin.logout, methods=["POST"]),
    Route("/setup/{token}", signin.setup, methods=["GET", "POST"]),
    Route("/users", users.list_users, methods=["GET"]),
    Route("/users/new", actions.new_user, methods=["GET", "POST"]),
    Route("/users/{user_id}", users.user_detail, methods=["GET"]),
    Route("/users/{user_id}/factors/{factor_id}/remove", actions.act, methods=["POST"]),
    Route("/users/{user_id}/{action}", actions.act, methods=["POST"]),
    # Mail and Health (dashboard/mail.py, dashboard/health.py)
    Route("/mail", mail.outbox_page, methods=["GET"]),
    Route("/mail/test", mail.send_test, methods=["POST"]),
    Route("/mail/templates/{kind}", mail.template_page, methods=["GET"]),
    Route("/mail/{outbox_id}", mail.message_page, methods=["GET"]),
    Route("/mail/{outbox_id}/{action}", mail.change, methods=["POST"]),
    Route("/health", health.health_page, methods=["GET"]),
    Route("/health/data", health.health_data, methods=["GET"]),
    Route("/health/figures", health.health_figures, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="dashboard-static"),
]

__all__ = ["routes"]
