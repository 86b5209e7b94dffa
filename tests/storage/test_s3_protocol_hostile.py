"""The S3 protocol against a hostile caller: forged and replayed signatures, tampered bodies,
bad tokens, traversal in keys, XML bombs and oversized bodies. Every refusal is S3's XML with
S3's status, nothing is written, and the server never answers 500."""

from __future__ import annotations

import hashlib
import http.client
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import botocore.exceptions  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from gatehouse.storage.s3 import sigv4
from tests.storage.s3_protocol import REGION, code_of, issue_key, s3_client
from tests.support import ConfirmedSession, RunningServer, run_sql


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture(scope="module")
def key(server: RunningServer) -> tuple[str, str]:
    access_key, secret = issue_key(server)
    client = s3_client(server, access_key, secret)
    client.create_bucket(Bucket="target")
    client.put_object(Bucket="target", Key="kept.txt", Body=b"original")
    return access_key, secret


def signed(server: RunningServer, credentials: Credentials, method: str, path: str, body: bytes = b"",
           headers: dict[str, str] | None = None, region: str = REGION, payload: str | None = None) -> AWSRequest:
    """A request signed by botocore's own S3 SigV4 signer, ready to be changed and sent."""
    request = AWSRequest(method=method, url=f"{server.url}/storage/v1/s3{path}", data=body, headers=headers or {})
    signer = S3SigV4Auth if payload is None else _declaring(payload)
    signer(credentials, "s3", region).add_auth(request)
    return request


def _declaring(payload: str) -> type[S3SigV4Auth]:
    """botocore's signer, declaring ``payload`` (a STREAMING- mode) as the body's hash."""

    class Declaring(S3SigV4Auth):  # type: ignore[misc]
        def payload(self, request: AWSRequest) -> str:
            return payload

    return Declaring


def send(request: AWSRequest, body: bytes | None = None) -> httpx.Response:
    """Send it byte for byte (http.client keeps the path as given: httpx would resolve ``..`` itself)."""
    prepared = request.prepare()
    content = body if body is not None else prepared.body or b""
    parts = urlsplit(prepared.url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        headers = {name: value for name, value in prepared.headers.items() if name.lower() != "content-length"}
        try:
            connection.request(prepared.method, parts.path + (f"?{parts.query}" if parts.query else ""),
                               body=content, headers={**headers, "Content-Length": str(len(content))})
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole body was read, and the connection closed: the answer is in
        answer = connection.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        connection.close()


def refused(answer: httpx.Response, code: str, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert f"<Code>{code}</Code>".encode() in answer.content, answer.text
    assert answer.headers["content-type"] == "application/xml"
    assert b"<RequestId>" in answer.content and b"<Resource>/storage/v1/s3" in answer.content


def stored(database_url: str, name: str) -> str | None:
    rows = run_sql(database_url, "SELECT metadata->>'size' FROM storage.objects WHERE bucket_id = 'target' AND name = $1",
                   name)
    return rows[0][0] if rows else None


def test_wrong_secret_unknown_key_and_no_signature(server: RunningServer, key: tuple[str, str]) -> None:
    access_key, secret = key
    refused(send(signed(server, Credentials(access_key, secret + "0"), "GET", "/target")), "SignatureDoesNotMatch", 403)
    refused(send(signed(server, Credentials("0" * 32, secret), "GET", "/target")), "InvalidAccessKeyId", 403)
    refused(send(signed(server, Credentials("x'; --", secret), "GET", "/target")), "InvalidAccessKeyId", 403)
    refused(httpx.get(f"{server.url}/storage/v1/s3/target/kept.txt"), "AccessDenied", 403)
    refused(httpx.get(f"{server.url}/storage/v1/s3/target/kept.txt",
                      headers={"Authorization": f"Bearer {server.keys.service_role_key}"}), "AccessDenied", 403)
    refused(send(signed(server, Credentials(access_key, secret), "GET", "/target", region="us-east-1")),
            "AuthorizationHeaderMalformed", 400)


def test_tampered_headers_and_bodies_are_refused_and_write_nothing(
    server: RunningServer, key: tuple[str, str], database_url: str
) -> None:
    credentials = Credentials(*key)
    put = signed(server, credentials, "PUT", "/target/kept.txt", b"evil", {"x-amz-meta-note": "a"})
    put.headers.replace_header("x-amz-meta-note", "b")
    refused(send(put), "SignatureDoesNotMatch", 403)
    extra = signed(server, credentials, "PUT", "/target/kept.txt", b"evil")
    extra.headers["x-amz-meta-sneaked"] = "in"
    refused(send(extra), "AccessDenied", 403)
    body_swap = signed(server, credentials, "PUT", "/target/kept.txt", b"what was signed")
    refused(send(body_swap, b"something else entirely"), "XAmzContentSHA256Mismatch", 400)
    unsigned = signed(server, credentials, "PUT", "/target/kept.txt", b"evil")
    unsigned.headers.replace_header("X-Amz-Content-SHA256", sigv4.UNSIGNED)
    refused(send(unsigned), "SignatureDoesNotMatch", 403)
    path_swap = signed(server, credentials, "PUT", "/target/other.txt", b"evil")
    path_swap.url = path_swap.url.replace("other.txt", "kept.txt")
    refused(send(path_swap), "SignatureDoesNotMatch", 403)
    assert stored(database_url, "kept.txt") == str(len(b"original"))
    assert stored(database_url, "other.txt") is None


def test_replays_outside_the_window_and_expired_presigned_urls(server: RunningServer, key: tuple[str, str]) -> None:
    credentials = Credentials(*key)
    late = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=16)
    with mock.patch("botocore.auth.get_current_datetime", return_value=late):
        old = signed(server, credentials, "GET", "/target/kept.txt")
        presigned = s3_client(server, *key).generate_presigned_url(
            "get_object", Params={"Bucket": "target", "Key": "kept.txt"}, ExpiresIn=900)
    refused(send(old), "RequestTimeTooSkewed", 403)
    refused(httpx.get(presigned), "AccessDenied", 403)
    early = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=16)
    with mock.patch("botocore.auth.get_current_datetime", return_value=early):
        refused(send(signed(server, credentials, "GET", "/target/kept.txt")), "RequestTimeTooSkewed", 403)
    fresh = s3_client(server, *key).generate_presigned_url("get_object", Params={"Bucket": "target", "Key": "kept.txt"},
                                                            ExpiresIn=60)
    assert httpx.get(fresh).content == b"original"
    for forged in (fresh.replace("X-Amz-Expires=60", "X-Amz-Expires=6000"),
                   fresh.replace("X-Amz-Expires=60", "X-Amz-Expires=9999999")):
        assert httpx.get(forged).status_code in (400, 403)


def test_path_traversal_and_bad_names_are_refused(server: RunningServer, key: tuple[str, str]) -> None:
    credentials = Credentials(*key)
    for path in ("/target/../etc/passwd", "/target/a/../../b", "/target/a//b", "/target/a/./b", "/target/%2E%2E/x",
                 "/target/a%00b", "/target/a%0Ab", "/target/a\\b", "/..%2Ftarget/x"):
        answer = send(signed(server, credentials, "PUT", path, b"x"))
        assert answer.status_code == 400, (path, answer.text)
        assert b"<Code>InvalidArgument</Code>" in answer.content or b"<Code>InvalidBucketName</Code>" in answer.content
    client = s3_client(server, *key)
    with pytest.raises(botocore.exceptions.ClientError) as traversal:
        client.put_object(Bucket="target", Key="../escape.txt", Body=b"x")
    assert code_of(traversal.value) == ("InvalidArgument", 400)
    with pytest.raises(botocore.exceptions.ClientError) as copy_traversal:
        client.copy_object(Bucket="target", Key="copy.txt", CopySource="target/../kept.txt")
    assert code_of(copy_traversal.value) == ("InvalidArgument", 400)


def test_bad_session_tokens_are_refused(
    server: RunningServer, key: tuple[str, str], confirmed_session: ConfirmedSession
) -> None:
    _, session = confirmed_session(server)
    claims = {**_claims(session["access_token"]), "exp": int(time.time()) - 60}
    expired = server.keys.sign(claims)
    head, payload, _ = session["access_token"].split(".")
    forged = f"{head}.{payload}.{'A' * 86}"
    for token, code in ((expired, "ExpiredToken"), (forged, "InvalidToken"), ("not-a-jwt", "InvalidToken")):
        client = s3_client(server, "project-ref", server.keys.anon_key, token)
        with pytest.raises(botocore.exceptions.ClientError) as bad:
            client.list_objects_v2(Bucket="target")
        assert code_of(bad.value) == (code, 403)
    wrong_secret = s3_client(server, "project-ref", "not the anon key", session["access_token"])
    with pytest.raises(botocore.exceptions.ClientError) as mismatch:
        wrong_secret.list_objects_v2(Bucket="target")
    assert code_of(mismatch.value) == ("SignatureDoesNotMatch", 403)
    publishable = s3_client(server, "project-ref", server.keys.publishable_key, session["access_token"])
    assert publishable.list_objects_v2(Bucket="target")["KeyCount"] == 0  # signed fine; RLS shows nothing
    signed_out = httpx.post(f"{server.url}/auth/v1/logout", headers={
        "apikey": server.keys.publishable_key, "Authorization": f"Bearer {session['access_token']}"})
    assert signed_out.status_code == 204, signed_out.text
    with pytest.raises(botocore.exceptions.ClientError) as ended:
        publishable.list_objects_v2(Bucket="target")
    assert code_of(ended.value) == ("AccessDenied", 403)


def _claims(token: str) -> dict[str, Any]:
    import base64
    import json

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&x;</Key></Object></Delete>"""


@pytest.mark.parametrize("body", [
    BOMB, EXTERNAL, b"<Delete><Object><Key>a</Key></Object>", b"not xml at all", b"<Other/>",
    b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
    b"<Delete>" + b"<a>" * 50 + b"</a>" * 50 + b"</Delete>",
    b"<Delete><Object><Key>x</Key></Object>" + b" " * (3 * 1024 * 1024) + b"</Delete>",
    b"<Delete><Object/></Delete>",
], ids=["billion-laughs", "external-entity", "unclosed", "not-xml", "wrong-root", "too-many-keys", "too-deep",
        "oversized", "no-key"])
def test_hostile_delete_objects_bodies(server: RunningServer, key: tuple[str, str], body: bytes, database_url: str) -> None:
    answer = send(signed(server, Credentials(*key), "POST", "/target?delete", body))
    refused(answer, "MalformedXML", 400)
    assert stored(database_url, "kept.txt") is not None


def test_hostile_complete_bodies(server: RunningServer, key: tuple[str, str]) -> None:
    client = s3_client(server, *key)
    upload_id = client.create_multipart_upload(Bucket="target", Key="parts.bin")["UploadId"]
    etag = client.upload_part(Bucket="target", Key="parts.bin", UploadId=upload_id, PartNumber=1, Body=b"p")["ETag"]
    path = f"/target/parts.bin?uploadId={upload_id}"
    for body in (BOMB.replace(b"Delete", b"CompleteMultipartUpload"), b"<CompleteMultipartUpload/>",
                 b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
                 b"<CompleteMultipartUpload>" + b" " * (3 * 1024 * 1024) + b"</CompleteMultipartUpload>"):
        refused(send(signed(server, Credentials(*key), "POST", path, body)), "MalformedXML", 400)
    for number in (b"0", b"10001", b"-1", b"one"):
        body = (b"<CompleteMultipartUpload><Part><PartNumber>" + number + b"</PartNumber><ETag>" + etag.encode()
                + b"</ETag></Part></CompleteMultipartUpload>")
        refused(send(signed(server, Credentials(*key), "POST", path, body)), "InvalidArgument", 400)
    other_id = client.create_multipart_upload(Bucket="target", Key="other.bin")["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError) as wrong_key:  # an upload id is bound to its key
        client.upload_part(Bucket="target", Key="parts.bin", UploadId=other_id, PartNumber=1, Body=b"x")
    assert code_of(wrong_key.value) == ("NoSuchUpload", 404)
    client.complete_multipart_upload(Bucket="target", Key="parts.bin", UploadId=upload_id,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert client.get_object(Bucket="target", Key="parts.bin")["Body"].read() == b"p"


def test_signed_chunks_are_verified_one_by_one(server: RunningServer, key: tuple[str, str], database_url: str) -> None:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD, as the AWS SDKs for JavaScript and Java send it: each chunk's
    signature chains from the request's; one changed byte in a chunk, or a reordered chunk, is refused."""
    credentials = Credentials(*key)
    chunks = [b"a" * 70_000, b"b" * 1000]

    def chunked_put(name: str, corrupt: bool = False) -> httpx.Response:
        total = sum(len(chunk) for chunk in chunks)
        request = signed(server, credentials, "PUT", f"/target/{name}", headers={
            "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(total)},
            payload=sigv4.STREAMING_SIGNED)
        claimed = sigv4.parse({k.lower(): v for k, v in request.headers.items()}, [])
        signing_key = sigv4.signing_key(credentials.secret_key, claimed)
        body, previous = b"", claimed.signature
        for chunk in [*chunks, b""]:
            previous = sigv4.chunk_signature(signing_key, claimed, previous, hashlib.sha256(chunk).hexdigest())
            body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
        if corrupt:
            body = body.replace(b"b" * 10, b"c" * 10, 1)
        return send(request, body)

    assert chunked_put("chunked.txt").status_code == 200, chunked_put("chunked.txt").text
    assert s3_client(server, *key).get_object(Bucket="target", Key="chunked.txt")["Body"].read() == b"".join(chunks)
    refused(chunked_put("corrupt.txt", corrupt=True), "SignatureDoesNotMatch", 403)
    assert stored(database_url, "corrupt.txt") is None


def test_no_request_was_answered_with_a_server_error(server: RunningServer) -> None:
    log = server.log()
    assert '"status":500' not in log and "unhandled error" not in log
