"""What the storage pages' tests share: uploads through the dashboard's form, rows and files as
the database and the disk have them, and the audit trail of one target."""

from __future__ import annotations

import html
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.dashboard.helpers import Visitor, fetch
from tests.support import RunningServer


def new_bucket_id(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def upload(visitor: Visitor, bucket: str, filename: str, content: bytes, content_type: str = "text/plain", *,
           csrf: str | None = None, **fields: str) -> httpx.Response:
    """The upload form as a browser posts it: the fields first, then the file."""
    data = {"csrf": visitor.csrf if csrf is None else csrf, "folder": "", **fields}
    if csrf == "":
        data.pop("csrf")
    response = visitor.http.post(f"/_/storage/upload/{bucket}", data=data,
                                 files={"file": (filename, content, content_type)}, headers=visitor._headers(None))
    return visitor._keep(response)


def create_bucket(visitor: Visitor, bucket: str, **settings: str) -> httpx.Response:
    page = visitor.post("/_/storage/buckets", {"id": bucket, **settings})
    assert page.status_code == 200, page.text
    return page


def object_row(database_url: str, bucket: str, name: str) -> dict[str, Any] | None:
    rows = fetch(database_url, "SELECT name, metadata::text AS metadata, user_metadata::text AS user_metadata "
                 "FROM storage.objects WHERE bucket_id = $1 AND name = $2", bucket, name)
    if not rows:
        return None
    row = dict(rows[0])
    row["metadata"] = json.loads(row["metadata"])
    row["user_metadata"] = json.loads(row["user_metadata"]) if row["user_metadata"] else None
    return row


def names_in(database_url: str, bucket: str) -> list[str]:
    return [row["name"] for row in fetch(database_url, "SELECT name FROM storage.objects WHERE bucket_id = $1 "
                                         "ORDER BY name COLLATE \"C\"", bucket)]


def bucket_row(database_url: str, bucket: str) -> dict[str, Any] | None:
    rows = fetch(database_url, "SELECT * FROM storage.buckets WHERE id = $1", bucket)
    return dict(rows[0]) if rows else None


def stored_files(server: RunningServer) -> set[Path]:
    """Every file under the server's storage folder but the render cache: blobs and spooled parts."""
    root = server.data_dir / "storage"
    return {path for path in root.rglob("*") if path.is_file() and "render-cache" not in path.parts}


def audited(database_url: str, target: str) -> list[dict[str, Any]]:
    rows = fetch(database_url, "SELECT a.action, a.detail::text AS detail, d.email FROM gatehouse.dashboard_audit a "
                 "JOIN gatehouse.dashboard_admins d ON d.id = a.admin_id WHERE a.target = $1 ORDER BY a.id", target)
    return [{**dict(row), "detail": json.loads(row["detail"])} for row in rows]


def shown(page: httpx.Response, element: str) -> str:
    """The text of the element with this id (notice, error, question), unescaped."""
    found = re.search(rf'id="{element}">(.*?)<', page.text, re.DOTALL)
    return html.unescape(found[1]) if found else ""
