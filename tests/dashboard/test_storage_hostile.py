"""The Storage pages against hostile visitors and input: no dashboard session (an app user's
cookie or token, the secret key) gets the log-in page and changes nothing; a missing or wrong
CSRF token gets 403 and changes nothing; traversal in names and folders, SQL and HTML in bucket
ids, oversized and malformed uploads get a 4xx and leave no row and no bytes; names and
metadata full of HTML are shown escaped."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from tests.auth.helpers import Auth
from tests.dashboard.helpers import Visitor, fetch, make_admin
from tests.dashboard.storage_helpers import (
    bucket_row,
    create_bucket,
    names_in,
    new_bucket_id,
    object_row,
    shown,
    stored_files,
    upload,
)
from tests.support import RunningServer, png, run_sql

MAX_FILE = 200_000
ENV = {"GATEHOUSE_STORAGE_MAX_FILE_SIZE": str(MAX_FILE), "GATEHOUSE_RATE_LIMIT_SIGNUP": "1000/60",
       "GATEHOUSE_RATE_LIMIT_EMAIL": "1000/60", "GATEHOUSE_RATE_LIMIT_EMAIL_ADDRESS": "1000/60"}


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env=ENV)


@pytest.fixture(scope="module")
def bucket(visitor: Visitor) -> str:
    """A bucket holding ``pic.png`` and ``docs/a.txt``."""
    name = new_bucket_id("hostile")
    create_bucket(visitor, name)
    assert upload(visitor, name, "pic.png", png(40), "image/png").status_code == 200
    assert upload(visitor, name, "a.txt", b"text", folder="docs/").status_code == 200
    return name


def _routes(bucket: str) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    pages = ["/_/storage", f"/_/storage/buckets/{bucket}", f"/_/storage/buckets/{bucket}/object?name=pic.png",
             f"/_/storage/buckets/{bucket}/thumbnail?name=pic.png", f"/_/storage/buckets/{bucket}/download?name=pic.png"]
    changes = [
        ("/_/storage/buckets", {"id": "intruder"}),
        (f"/_/storage/buckets/{bucket}/settings", {"public": "yes"}),
        (f"/_/storage/buckets/{bucket}/empty", {"confirmed": "yes"}),
        (f"/_/storage/buckets/{bucket}/delete", {"confirmed": "yes"}),
        (f"/_/storage/buckets/{bucket}/remove", {"name": "pic.png", "confirmed": "yes"}),
        (f"/_/storage/buckets/{bucket}/move", {"name": "pic.png", "target": "stolen.png"}),
    ]
    return pages, changes


def _unchanged(database_url: str, bucket: str) -> None:
    assert names_in(database_url, bucket) == ["docs/a.txt", "pic.png"]
    row = bucket_row(database_url, bucket)
    assert row is not None and row["public"] is False
    assert bucket_row(database_url, "intruder") is None


def test_app_credentials_and_no_session_get_the_log_in_page(server: RunningServer, bucket: str,
                                                            database_url: str) -> None:
    auth = Auth(server)
    _, session = auth.confirmed_user()
    token = session["access_token"]
    pages, changes = _routes(bucket)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for headers in (
            {},
            {"authorization": f"Bearer {token}", "apikey": server.keys.publishable_key},
            {"apikey": server.keys.secret_key, "authorization": f"Bearer {server.keys.secret_key}"},
            {"authorization": f"Bearer {server.keys.service_role_key}"},
            {"cookie": f"gh-access-token={token}; gh-refresh-token={session['refresh_token']}"},
        ):
            for path in pages:
                answer = http.get(path, headers=headers)
                assert answer.status_code == 303 and answer.headers["location"] == "/_/login", (path, headers)
            for path, data in changes:
                answer = http.post(path, data=data, headers=headers)
                assert answer.status_code == 303 and answer.headers["location"] == "/_/login", (path, headers)
            sent = http.post(f"/_/storage/upload/{bucket}", data={"name": "planted.txt"},
                             files={"file": ("x.txt", b"planted", "text/plain")}, headers=headers)
            assert sent.status_code == 303 and sent.headers["location"] == "/_/login"
    auth.close()
    _unchanged(database_url, bucket)


def test_a_missing_or_wrong_csrf_token_is_refused(server: RunningServer, visitor: Visitor, bucket: str,
                                                  database_url: str) -> None:
    _, changes = _routes(bucket)
    other = Visitor(server)
    other.sign_in(make_admin(database_url))
    other.get("/_/storage")
    for csrf in ("", "wrong" * 9, other.csrf):  # none, garbage, another administrator's
        for path, data in changes:
            assert visitor.post(path, data, csrf=csrf).status_code == 403, (path, csrf)
        assert upload(visitor, bucket, "x.txt", b"planted", name="planted.txt", csrf=csrf).status_code == 403
    other.close()
    _unchanged(database_url, bucket)


BAD_NAMES = ["../etc/passwd", "docs/../../x", "/etc/passwd", "a\x00b", "./pic.png", "docs//a.txt", "..", "a\\b",
             "x/", "a\nb"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_traversal_in_object_names_is_refused(visitor: Visitor, server: RunningServer, bucket: str,
                                              database_url: str, bad: str) -> None:
    before = stored_files(server)
    for route in ("object", "thumbnail", "download"):
        answer = visitor.get(f"/_/storage/buckets/{bucket}/{route}", params={"name": bad})
        assert answer.status_code == 400, (route, answer.text)
    assert visitor.post(f"/_/storage/buckets/{bucket}/remove", {"name": bad, "confirmed": "yes"}).status_code == 400
    moved = visitor.post(f"/_/storage/buckets/{bucket}/move", {"name": "pic.png", "target": bad})
    assert moved.status_code == 400 and "Invalid key" in shown(moved, "error")
    assert upload(visitor, bucket, "x.txt", b"planted", name=bad).status_code == 400
    if bad != "x/":  # a fine folder, though not a name
        assert upload(visitor, bucket, "x.txt", b"planted", folder=bad + "/").status_code == 400
    assert stored_files(server) == before
    _unchanged(database_url, bucket)


@pytest.mark.parametrize("query", ["prefix=../", "prefix=%2e%2e/", "prefix=%2E%2E%2Fetc", "prefix=/etc/",
                                   "prefix=docs/%00/", "prefix=docs//", "prefix=.%2F", "prefix=docs%5C..%5C"])
def test_traversal_in_folders_is_refused(visitor: Visitor, bucket: str, query: str) -> None:
    answer = visitor.get(f"/_/storage/buckets/{bucket}?{query}")
    assert answer.status_code == 400 and "Invalid key" in answer.text


@pytest.mark.parametrize("bad", ["x'; DROP TABLE storage.objects; --", "<script>alert(1)</script>", "UPPER",
                                 "a/b", "..", "list", "x" * 64, "a b"])
def test_hostile_bucket_ids(visitor: Visitor, database_url: str, bad: str) -> None:
    made = visitor.post("/_/storage/buckets", {"id": bad})
    assert made.status_code == 400 and "Bucket name invalid" in made.text
    assert "<script>alert(1)" not in made.text
    assert bucket_row(database_url, bad) is None
    assert fetch(database_url, "SELECT count(*) FROM storage.objects")[0][0] >= 2  # still there
    if "/" not in bad and bad != "..":
        path = quote(bad, safe="")
        assert visitor.get(f"/_/storage/buckets/{path}").status_code == 400
        assert visitor.post(f"/_/storage/buckets/{path}/settings", {"public": "yes"}).status_code == 400
        assert visitor.get(f"/_/storage/buckets/{path}/object", params={"name": "a"}).status_code == 400
        assert upload(visitor, path, "x.txt", b"x").status_code == 400


def test_oversized_and_malformed_uploads(visitor: Visitor, server: RunningServer, database_url: str) -> None:
    name = new_bucket_id("sizes")
    create_bucket(visitor, name)
    before = stored_files(server)
    over = upload(visitor, name, "big.bin", b"\0" * (MAX_FILE + 1), "application/octet-stream")
    assert over.status_code == 413 and f"{MAX_FILE} bytes" in shown(over, "error")
    fields = upload(visitor, name, "x.txt", b"x", metadata="{" + '"k": "' + "v" * 70_000 + '"}')
    assert fields.status_code == 413
    bad_json = upload(visitor, name, "x.txt", b"x", metadata="{not json")
    assert bad_json.status_code == 400 and "JSON" in shown(bad_json, "error")
    not_object = upload(visitor, name, "x.txt", b"x", metadata="[1, 2]")
    assert not_object.status_code == 400
    assert upload(visitor, name, "x.txt", b"x", "multipart/form-data; boundary=zzz").status_code == 415
    assert upload(visitor, name, "x.txt", b"x", "text/plain, text/html").status_code == 400
    raw = visitor.http.post(f"/_/storage/upload/{name}", content=b"raw bytes",
                            headers={**visitor._headers(None), "content-type": "text/plain"})
    assert raw.status_code == 415
    no_file = visitor.http.post(f"/_/storage/upload/{name}", data={"csrf": visitor.csrf, "name": "x.txt"},
                                files={"other": (None, b"not a file")}, headers=visitor._headers(None))
    assert no_file.status_code == 400 and "Choose a file" in no_file.text
    broken = visitor.http.post(f"/_/storage/upload/{name}", content=b"--zzz\r\ngarbage",
                               headers={**visitor._headers(None), "content-type": "multipart/form-data; boundary=zzz"})
    assert 400 <= broken.status_code < 500
    assert names_in(database_url, name) == [] and stored_files(server) == before


def test_html_in_names_and_metadata_is_shown_escaped(visitor: Visitor, database_url: str) -> None:
    bucket = new_bucket_id("xss")
    create_bucket(visitor, bucket)
    evil = '<img src=x onerror=alert(1)>".txt'
    answer = upload(visitor, bucket, "x.txt", b"x", name=f"xss/{evil}",
                    metadata='{"<b>key</b>": "<script>alert(2)</script>"}')
    assert answer.status_code == 200 and object_row(database_url, bucket, f"xss/{evil}") is not None
    run_sql(database_url, "UPDATE storage.objects SET metadata = metadata || "
            """'{"mimetype": "text/html\\"><script>alert(3)</script>", "cacheControl": "<b>c</b>"}'"""
            " WHERE bucket_id = $1 AND name = $2 RETURNING 1", bucket, f"xss/{evil}")
    run_sql(database_url, "UPDATE storage.buckets SET name = '<svg onload=alert(4)>' WHERE id = $1 RETURNING 1",
            bucket)
    pages = [
        visitor.get(f"/_/storage/buckets/{bucket}", params={"prefix": "xss/"}),
        visitor.get(f"/_/storage/buckets/{bucket}/object", params={"name": f"xss/{evil}"}),
        visitor.get("/_/storage"),
    ]
    for page in pages:
        assert page.status_code == 200
        for raw in ("<img src=x", "<script>alert", "<b>key", "<svg onload", "<b>c</b>"):
            assert raw not in page.text, (raw, page.url)
    assert "&lt;img src=x onerror=alert(1)&gt;&#34;.txt" in pages[0].text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in pages[1].text
    assert "&lt;svg onload=alert(4)&gt;" in pages[2].text
