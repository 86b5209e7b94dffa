"""Serving stored objects over the wire: the headers no upload can take away or break.

Every object response (download, public, authenticated, signed, HEAD, 304, 206, renders, errors)
is sandboxed and never sniffed; document types are attachments unless the bucket opts in; an
upload's content type must be one media type and its cache directive a header value; and values
stored before these checks (or written in SQL) are served safely.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from gatehouse.core.db import Database
from tests.storage.conftest import S3Bucket
from tests.support import RunningServer, png

CSP = "default-src 'none'; sandbox"
HTML = b"<!doctype html><title>stored</title><script>document.title='XSS'</script>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>document.title="XSS"</script></svg>'



@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    """The secret key from a server (no browser headers): creates the buckets the tests use."""
    client = httpx.Client(base_url=f"{server.url}/storage/v1", headers={"apikey": server.keys.secret_key}, timeout=15)
    for body in ({"id": "files", "public": True}, {"id": "vault", "public": False},
                 {"id": "pages", "public": True, "inline_documents": True}):
        assert client.post("/bucket", json=body).status_code == 200
    yield client
    client.close()


def put(admin: httpx.Client, bucket: str, name: str, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    return admin.post(f"/object/{bucket}/{name}", content=body, headers={"Content-Type": content_type, **headers})


def object_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP, response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


def sign(admin: httpx.Client, bucket: str, name: str) -> str:
    signed = admin.post(f"/object/sign/{bucket}/{name}", json={"expiresIn": 60})
    assert signed.status_code == 200, signed.text
    return str(signed.json()["signedURL"])


# -- (a) every object response is sandboxed ---------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/json", "video/mp4", "text/html"])
def test_every_route_and_status_carries_the_sandbox(server: RunningServer, admin: httpx.Client, content_type: str) -> None:
    name = f"{uuid.uuid4().hex}.bin"
    body = png() if content_type == "image/png" else b"0123456789" * 10
    assert put(admin, "files", name, body, content_type).status_code == 200
    base = f"{server.url}/storage/v1"
    key = {"apikey": server.keys.secret_key}
    urls = [
        (f"{base}/object/public/files/{name}", {}),
        (f"{base}/object/files/{name}", {}),
        (f"{base}/object/authenticated/files/{name}", key),
        (f"{base}{sign(admin, 'files', name)}", {}),
    ]
    for url, headers in urls:
        full = httpx.get(url, headers=headers)
        assert full.status_code == 200 and full.content == body, (url, full.text)
        object_headers(full)
        object_headers(httpx.head(url, headers=headers))
        partial = httpx.get(url, headers=headers | {"Range": "bytes=0-3"})
        assert partial.status_code == 206 and partial.content == body[:4]
        object_headers(partial)
        cached = httpx.get(url, headers=headers | {"If-None-Match": full.headers["etag"]})
        assert cached.status_code == 304
        object_headers(cached)
    missing = httpx.get(f"{base}/object/public/files/nothing-{name}")
    assert missing.json()["statusCode"] == "404"
    object_headers(missing)


def test_image_renders_carry_the_sandbox(server: RunningServer, admin: httpx.Client) -> None:
    name = f"{uuid.uuid4().hex}.png"
    assert put(admin, "files", name, png(64), "image/png").status_code == 200
    rendered = httpx.get(f"{server.url}/storage/v1/render/image/public/files/{name}", params={"width": "16"})
    assert rendered.status_code == 200 and rendered.headers["content-type"].startswith("image/")
    object_headers(rendered)
    signed = sign(admin, "files", name).replace("/object/sign/", "/render/image/sign/")
    rendered = httpx.get(f"{server.url}/storage/v1{signed}&width=16")
    assert rendered.status_code == 200
    object_headers(rendered)


# -- (b) one valid media type --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain,text/html", "application/octet-stream,text/html", "text/html, text/plain", "text/xsl,",
     'text/plain; x="a,b"', "text", "text/pl ain", "text/plain; charset"],
)
async def test_a_raw_upload_must_declare_one_media_type(server: RunningServer, admin: httpx.Client, db: Database,
                                                        content_type: str) -> None:
    name = f"{uuid.uuid4().hex}.txt"
    refused = put(admin, "files", name, HTML, content_type)
    assert refused.status_code == 400, refused.text
    assert refused.json() | {"message": ""} == {
        "statusCode": "400", "code": "InvalidMimeType", "error": "invalid_mime_type", "message": ""
    }
    assert "media type" in refused.json()["message"]
    assert await db.admin.fetchval("SELECT count(*) FROM storage.objects WHERE name = $1", name) == 0


def test_non_latin1_content_type_is_refused(server: RunningServer, admin: httpx.Client) -> None:
    name = f"{uuid.uuid4().hex}.txt"
    refused = admin.post(f"/object/files/{name}", content=b"x",
                         headers=[("Content-Type", "text/h\xe9ml".encode("latin-1"))])
    assert refused.status_code == 400 and refused.json()["code"] == "InvalidMimeType"


def multipart(fields: dict[str, str], part_type: str = "text/plain") -> tuple[bytes, str]:
    boundary = "gh-test-boundary"
    out = b""
    for key, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n').encode() + value.encode() + b"\r\n"
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            f"Content-Type: {part_type}\r\n\r\n").encode("latin-1") + HTML + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("fields", "part_type", "code"),
    [
        ({"contentType": "text/plain,text/html"}, "text/plain", "InvalidMimeType"),
        ({"contentType": "text/html\r\nX-Evil: 1"}, "text/plain", "InvalidMimeType"),
        ({"contentType": "tëxt/plain"}, "text/plain", "InvalidMimeType"),
        ({}, "application/octet-stream,text/html", "InvalidMimeType"),
        ({}, "text/pl\xe4in", "InvalidMimeType"),
        ({"cacheControl": "max-age=1\r\nSet-Cookie: a=b"}, "text/plain", "InvalidRequest"),
        ({"cacheControl": "max-age=1\nX: y"}, "text/plain", "InvalidRequest"),
        ({"cacheControl": "délai"}, "text/plain", "InvalidRequest"),
        ({"cacheControl": "\u4e00\u4e8c"}, "text/plain", "InvalidRequest"),
        ({"metadata": "[1, 2]"}, "text/plain", "InvalidRequest"),
    ],
)
async def test_a_form_upload_checks_its_type_and_cache_control(server: RunningServer, admin: httpx.Client,
                                                               db: Database, fields: dict[str, str], part_type: str,
                                                               code: str) -> None:
    name = f"{uuid.uuid4().hex}.txt"
    body, content_type = multipart(fields, part_type)
    refused = admin.post(f"/object/files/{name}", content=body, headers={"Content-Type": content_type})
    assert refused.status_code == 400, refused.text
    assert refused.json()["statusCode"] == "400" and refused.json()["code"] == code
    assert await db.admin.fetchval("SELECT count(*) FROM storage.objects WHERE name = $1", name) == 0


def test_a_raw_cache_control_outside_ascii_is_refused(admin: httpx.Client) -> None:
    refused = admin.post(f"/object/files/{uuid.uuid4().hex}.txt", content=b"x",
                         headers=[("Content-Type", b"text/plain"), ("Cache-Control", "max-age=1, d\xe9lai".encode("latin-1"))])
    assert refused.status_code == 400 and refused.json()["code"] == "InvalidRequest"


def test_good_form_values_are_kept(server: RunningServer, admin: httpx.Client) -> None:
    name = f"{uuid.uuid4().hex}.txt"
    body, content_type = multipart({"contentType": "text/plain; charset=utf-8", "cacheControl": "60",
                                    "metadata": '{"note": "caf\u00e9 \u4e00"}'})
    assert admin.post(f"/object/files/{name}", content=body, headers={"Content-Type": content_type}).status_code == 200
    served = httpx.get(f"{server.url}/storage/v1/object/public/files/{name}")
    assert served.headers["content-type"].startswith("text/plain") and served.headers["cache-control"] == "max-age=60"
    assert admin.get(f"/object/info/files/{name}").json()["metadata"] == {"note": "caf\u00e9 \u4e00"}


def test_x_metadata_is_base64_json_of_an_object(admin: httpx.Client) -> None:
    good = base64.b64encode(orjson.dumps({"caption": "\u00e9t\u00e9 \U0001f600"})).decode()
    name = f"{uuid.uuid4().hex}.txt"
    assert put(admin, "files", name, b"x", "text/plain", **{"x-metadata": good}).status_code == 200
    assert admin.get(f"/object/info/files/{name}").json()["metadata"] == {"caption": "\u00e9t\u00e9 \U0001f600"}
    oversized = base64.b64encode(orjson.dumps({"caption": "x" * 9000})).decode()
    for bad in ["not base64!", base64.b64encode(b"[1]").decode(), base64.b64encode(b'{"a": "\\u0000"}').decode(),
                base64.b64encode(b"\xff\xfe").decode(), oversized]:
        refused = put(admin, "files", f"{uuid.uuid4().hex}.txt", b"x", "text/plain", **{"x-metadata": bad})
        assert refused.status_code == 400 and refused.json()["code"] == "InvalidRequest", (bad, refused.text)


# -- (c) documents are attachments unless the bucket opts in -------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "TEXT/HTML; charset=utf-8", "text/xsl", "image/svg+xml", "application/xhtml+xml", "text/xml",
     "application/xml", "application/javascript", "text/javascript", "application/rss+xml", "Image/Svg+Xml"],
)
def test_documents_are_attachments(server: RunningServer, admin: httpx.Client, content_type: str) -> None:
    name = f"{uuid.uuid4().hex}.html"
    assert put(admin, "files", name, SVG if "svg" in content_type.lower() else HTML, content_type).status_code == 200
    for path in (f"/object/public/files/{name}", f"/object/files/{name}", sign(admin, "files", name)):
        served = httpx.get(f"{server.url}/storage/v1{path}")
        assert served.status_code == 200, served.text
        assert served.headers["content-disposition"] == f"attachment; filename*=UTF-8''{name}"
        object_headers(served)
    cached = httpx.get(f"{server.url}/storage/v1/object/public/files/{name}", headers={"If-None-Match": served.headers["etag"]})
    assert cached.status_code == 304 and cached.headers["content-disposition"].startswith("attachment")


def test_other_types_stay_inline(server: RunningServer, admin: httpx.Client) -> None:
    name = f"{uuid.uuid4().hex}.png"
    assert put(admin, "files", name, png(), "image/png").status_code == 200
    served = httpx.get(f"{server.url}/storage/v1/object/public/files/{name}")
    assert "content-disposition" not in served.headers
    object_headers(served)


def test_a_bucket_may_serve_documents_inline_still_sandboxed(server: RunningServer, admin: httpx.Client) -> None:
    assert admin.get("/bucket/pages").json()["inline_documents"] is True
    assert admin.get("/bucket/files").json()["inline_documents"] is False
    name = f"{uuid.uuid4().hex}.html"
    assert put(admin, "pages", name, HTML, "text/html").status_code == 200
    served = httpx.get(f"{server.url}/storage/v1/object/public/pages/{name}")
    assert "content-disposition" not in served.headers and served.headers["content-type"].startswith("text/html")
    object_headers(served)
    assert admin.put("/bucket/pages", json={"inline_documents": False}).status_code == 200
    served = httpx.get(f"{server.url}/storage/v1/object/public/pages/{name}")
    assert served.headers["content-disposition"].startswith("attachment")
    assert admin.put("/bucket/pages", json={"public": True}).status_code == 200  # other updates leave it alone
    assert admin.get("/bucket/pages").json()["inline_documents"] is False
    refused = admin.put("/bucket/pages", json={"inline_documents": "yes"})
    assert refused.status_code == 400 and "inline_documents" in refused.json()["message"]
    assert admin.put("/bucket/pages", json={"inline_documents": True}).status_code == 200


# -- item 11: values stored before the checks are served safely ----------------------------------------------


@pytest.mark.parametrize(
    ("mimetype", "cache", "etag", "served_type", "served_cache"),
    [
        ("text/plain,text/html", "no-cache", '"a"', "application/octet-stream", "no-cache"),
        ("application/octet-stream,text/html", "no-cache", '"a"', "application/octet-stream", "no-cache"),
        ("text/plain", "max-age=1\r\nSet-Cookie: stolen=1", '"a"', "text/plain", "no-cache"),
        ("text/plain", "d\u00e9lai \u4e00", '"a"', "text/plain", "no-cache"),
        ("text/pl\u4e00in", "no-cache", '"a\r\nX: y"', "application/octet-stream", "no-cache"),
        ("text/html", "no-cache", '"a"', "text/html", "no-cache"),
    ],
)
async def test_values_stored_before_the_checks_are_served_safely(
    server: RunningServer, admin: httpx.Client, db: Database, mimetype: str, cache: str, etag: str, served_type: str,
    served_cache: str,
) -> None:
    name = f"{uuid.uuid4().hex}.txt"
    assert put(admin, "files", name, b"legacy bytes", "text/plain").status_code == 200
    await db.admin.execute(
        "UPDATE storage.objects SET metadata = metadata || jsonb_build_object('mimetype', $2::text, "
        "'cacheControl', $3::text, 'eTag', $4::text) WHERE bucket_id = 'files' AND name = $1",
        name, mimetype, cache, etag,
    )
    for path in (f"/object/public/files/{name}", f"/object/files/{name}", sign(admin, "files", name)):
        served = httpx.get(f"{server.url}/storage/v1{path}")
        assert served.status_code == 200 and served.content == b"legacy bytes", served.text
        assert served.headers["content-type"].split(";")[0] == served_type
        assert served.headers["cache-control"] == served_cache
        assert "set-cookie" not in served.headers and "x" not in served.headers
        object_headers(served)
        if served_type == "text/html":
            assert served.headers["content-disposition"].startswith("attachment")
    info = admin.get(f"/object/info/files/{name}")
    assert info.status_code == 200 and info.json()["content_type"] == served_type


# -- (e) a download from S3 fails before its headers, not after -------------------------------------------

def test_a_missing_or_unreachable_s3_blob_is_an_error_not_a_cut_off_200(
    server_factory: Callable[..., RunningServer], s3: S3Bucket
) -> None:
    """The blob is opened and its first chunk read before the status line goes out: a blob removed
    behind Gatehouse's back is a 404 and a store that lost its bucket a 503, each in the storage
    error shape, where a streamed 200 would have been cut off after its headers."""
    remote = server_factory(env=s3.env)
    with httpx.Client(base_url=f"{remote.url}/storage/v1", headers={"apikey": remote.keys.secret_key},
                      timeout=30) as client:
        assert client.post("/bucket", json={"id": "gone", "public": False}).status_code == 200
        small, large = b"tiny avatar", os.urandom(3 * 64 * 1024 + 17)
        for name, body in (("small.bin", small), ("large.bin", large), ("kept.bin", small)):
            assert client.post(f"/object/gone/{name}", content=body,
                               headers={"Content-Type": "application/octet-stream"}).status_code == 200
        assert client.get("/object/gone/large.bin").content == large
        assert client.get("/object/gone/large.bin", headers={"Range": "bytes=70000-"}).content == large[70000:]

        sizes = {item["Key"]: item["Size"] for item in s3.client.list_objects_v2(Bucket=s3.name)["Contents"]}
        one_small = next(key for key, size in sizes.items() if size == len(small))
        for key, size in sizes.items():  # the large blob and one of the two small ones
            if size != len(small) or key == one_small:
                s3.client.delete_object(Bucket=s3.name, Key=key)
        answers = [client.get(f"/object/gone/{name}") for name in ("small.bin", "large.bin", "kept.bin")]
        served = [a.content for a in answers if a.status_code == 200]
        missing = [a.json() for a in answers if a.status_code == 400]  # Supabase Storage's not-found
        assert served == [small] and len(missing) == 2, answers
        assert all(m["statusCode"] == "404" and m["error"] == "not_found" for m in missing), missing

        for item in s3.client.list_objects_v2(Bucket=s3.name).get("Contents", []):
            s3.client.delete_object(Bucket=s3.name, Key=item["Key"])
        s3.client.delete_bucket(Bucket=s3.name)
        unavailable = client.get("/object/gone/kept.bin")
        assert unavailable.status_code == 503, unavailable.text
        assert "message" in unavailable.json() and "statusCode" in unavailable.json(), unavailable.text
