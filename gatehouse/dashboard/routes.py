"""The dashboard's route table, mounted at ``/_`` by ``create_app``."""

from __future__ import annotations

from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gatehouse.dashboard import (
    actions,
    data,
    health,
    keys,
    mail,
    signin,
    storage_buckets,
    storage_objects,
    storage_upload,
    users,
)
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
    # Storage (/_/storage): buckets, a bucket's folders and objects, uploads
    Route("/storage", storage_buckets.list_buckets, methods=["GET"]),
    Route("/storage/buckets", storage_buckets.create_bucket, methods=["POST"]),
    Route("/storage/buckets/{bucket}", storage_objects.browse, methods=["GET"]),
    Route("/storage/buckets/{bucket}/settings", storage_buckets.edit_bucket, methods=["POST"]),
    Route("/storage/buckets/{bucket}/empty", storage_buckets.empty_bucket, methods=["POST"]),
    Route("/storage/buckets/{bucket}/delete", storage_buckets.delete_bucket, methods=["POST"]),
    Route("/storage/buckets/{bucket}/object", storage_objects.detail, methods=["GET"]),
    Route("/storage/buckets/{bucket}/thumbnail", storage_objects.thumbnail, methods=["GET"]),
    Route("/storage/buckets/{bucket}/download", storage_objects.download, methods=["GET"]),
    Route("/storage/buckets/{bucket}/remove", storage_objects.remove, methods=["POST"]),
    Route("/storage/buckets/{bucket}/move", storage_objects.move, methods=["POST"]),
    Route("/storage/upload/{bucket}", storage_upload.upload, methods=["POST"]),
    # Data: the exposed schemas' tables, their policies and rows (data.py)
    Route("/data", data.list_tables, methods=["GET"]),
    Route("/data/{schema}/{table}", data.show_table, methods=["GET"]),
    Route("/data/{schema}/{table}/row", data.edit_row, methods=["GET", "POST"]),
    Route("/data/{schema}/{table}/new", data.new_row, methods=["GET", "POST"]),
    Route("/data/{schema}/{table}/delete", data.delete_row, methods=["POST"]),
    # Keys and settings: the effective configuration and the signing-key rotation
    Route("/settings", keys.page, methods=["GET"]),
    Route("/settings/keys/{step}", keys.step, methods=["POST"]),
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
