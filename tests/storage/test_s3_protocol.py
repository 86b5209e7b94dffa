"""The S3 protocol at /storage/v1/s3, driven by boto3 (the AWS CLI's wire behaviour is botocore's).

An access key from ``gatehouse s3-keys create`` acts as the service role; a user's access token
as the session token acts as that user, and RLS on storage.objects decides what S3 shows them.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import botocore.exceptions  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.awsrequest import AWSResponse  # type: ignore[import-untyped]

from gatehouse.storage.backends import create_backend
from gatehouse.storage.janitor import BlobJanitor
from gatehouse.storage.s3.multipart import MultipartJanitor
from tests.storage.s3_protocol import code_of, issue_key, s3_client
from tests.support import ConfirmedSession, RunningServer, gatehouse_command, png, run_sql

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], database_url: str) -> RunningServer:
    run_sql(database_url, """
        CREATE POLICY "s3 tests: own objects read" ON storage.objects FOR SELECT TO authenticated
            USING (bucket_id = 'mine' AND owner = (SELECT auth.uid()));
        CREATE POLICY "s3 tests: own folder insert" ON storage.objects FOR INSERT TO authenticated
            WITH CHECK (bucket_id = 'mine' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
        CREATE POLICY "s3 tests: own objects update" ON storage.objects FOR UPDATE TO authenticated
            USING (bucket_id = 'mine' AND owner = (SELECT auth.uid()));
        CREATE POLICY "s3 tests: own objects delete" ON storage.objects FOR DELETE TO authenticated
            USING (bucket_id = 'mine' AND owner = (SELECT auth.uid()));
        CREATE POLICY "s3 tests: buckets visible" ON storage.buckets FOR SELECT TO authenticated USING (true);
    """)
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_STORAGE_MAX_FILE_SIZE": str(24 * MiB)})


@pytest.fixture(scope="module")
def s3(server: RunningServer) -> Any:
    access_key, secret = issue_key(server)
    client = s3_client(server, access_key, secret)
    for bucket in ("plain", "mine"):
        client.create_bucket(Bucket=bucket)
    return client


def as_user(server: RunningServer, session: dict[str, Any]) -> Any:
    """The session-token client Supabase documents: any access key id, the anon key as secret."""
    return s3_client(server, "project-ref", server.keys.anon_key, session["access_token"])


def test_put_get_head_delete_round_trip_with_ranges_and_etags(s3: Any) -> None:
    data = os.urandom(100_000)
    put = s3.put_object(Bucket="plain", Key="dir/a b+c.bin", Body=data, ContentType="application/octet-stream",
                        Metadata={"colour": "blue"})
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="plain", Key="dir/a b+c.bin")
    assert got["Body"].read() == data and got["ETag"] == put["ETag"] and got["Metadata"] == {"colour": "blue"}
    ranged = s3.get_object(Bucket="plain", Key="dir/a b+c.bin", Range="bytes=10-19")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206 and ranged["Body"].read() == data[10:20]
    assert ranged["ContentRange"] == f"bytes 10-19/{len(data)}"
    with pytest.raises(botocore.exceptions.ClientError) as unchanged:
        s3.get_object(Bucket="plain", Key="dir/a b+c.bin", IfNoneMatch=put["ETag"])
    assert code_of(unchanged.value)[1] == 304
    with pytest.raises(botocore.exceptions.ClientError) as bad_range:
        s3.get_object(Bucket="plain", Key="dir/a b+c.bin", Range=f"bytes={len(data) + 5}-")
    assert code_of(bad_range.value) == ("InvalidRange", 416)
    head = s3.head_object(Bucket="plain", Key="dir/a b+c.bin")
    assert head["ContentLength"] == len(data) and head["ETag"] == put["ETag"]
    s3.delete_object(Bucket="plain", Key="dir/a b+c.bin")
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        s3.get_object(Bucket="plain", Key="dir/a b+c.bin")
    assert code_of(gone.value) == ("NoSuchKey", 404)
    with pytest.raises(botocore.exceptions.ClientError) as gone_head:
        s3.head_object(Bucket="plain", Key="dir/a b+c.bin")
    assert code_of(gone_head.value)[1] == 404


def test_buckets_list_head_create_delete(s3: Any) -> None:
    names = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    assert {"plain", "mine"} <= set(names)
    s3.create_bucket(Bucket="scratch")
    s3.head_bucket(Bucket="scratch")
    with pytest.raises(botocore.exceptions.ClientError) as twice:
        s3.create_bucket(Bucket="scratch")
    assert code_of(twice.value)[0] == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket="scratch", Key="x", Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as full:
        s3.delete_bucket(Bucket="scratch")
    assert code_of(full.value) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="scratch", Key="x")
    s3.delete_bucket(Bucket="scratch")
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        s3.head_bucket(Bucket="scratch")
    assert code_of(missing.value)[1] == 404
    with pytest.raises(botocore.exceptions.ClientError) as no_bucket:
        s3.list_objects_v2(Bucket="scratch")
    assert code_of(no_bucket.value) == ("NoSuchBucket", 404)


def test_list_objects_v2_prefix_delimiter_paging_and_start_after(s3: Any) -> None:
    keys = ["list/a.txt", "list/b.txt", "list/sub/c.txt", "list/sub/d.txt", "list/z/e.txt", "list/ü ?&.txt"]
    for key in keys:
        s3.put_object(Bucket="plain", Key=key, Body=key.encode())
    everything = s3.list_objects_v2(Bucket="plain", Prefix="list/")
    assert [item["Key"] for item in everything["Contents"]] == sorted(keys, key=lambda k: k.encode())
    assert everything["KeyCount"] == len(keys) and not everything["IsTruncated"]
    assert everything["Contents"][0]["Size"] == len(b"list/a.txt")
    folded = s3.list_objects_v2(Bucket="plain", Prefix="list/", Delimiter="/")
    assert [item["Key"] for item in folded["Contents"]] == ["list/a.txt", "list/b.txt", "list/ü ?&.txt"]
    assert [p["Prefix"] for p in folded["CommonPrefixes"]] == ["list/sub/", "list/z/"]
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="plain", Prefix="list/", PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3 and [i["Key"] for p in pages for i in p["Contents"]] == [i["Key"] for i in everything["Contents"]]
    after = s3.list_objects_v2(Bucket="plain", Prefix="list/", StartAfter="list/sub/d.txt")
    assert [item["Key"] for item in after["Contents"]] == ["list/z/e.txt", "list/ü ?&.txt"]
    assert s3.list_objects_v2(Bucket="plain", Prefix="list/", MaxKeys=0)["KeyCount"] == 0
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket="plain", Prefix="list/", PaginationConfig={"PageSize": 4}))
    assert [i["Key"] for p in v1 for i in p["Contents"]] == [i["Key"] for i in everything["Contents"]]
    with pytest.raises(botocore.exceptions.ClientError) as bad_token:
        s3.list_objects_v2(Bucket="plain", ContinuationToken="not-a-token")
    assert code_of(bad_token.value) == ("InvalidArgument", 400)


def test_copy_object_and_delete_objects(s3: Any) -> None:
    s3.put_object(Bucket="plain", Key="copy/source.txt", Body=b"copied bytes", ContentType="text/plain")
    s3.put_object(Bucket="mine", Key="copy/target.txt", Body=b"to be replaced")
    result = s3.copy_object(Bucket="mine", Key="copy/target.txt", CopySource={"Bucket": "plain", "Key": "copy/source.txt"})
    assert result["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copied bytes").hexdigest()}"'
    got = s3.get_object(Bucket="mine", Key="copy/target.txt")
    assert got["Body"].read() == b"copied bytes" and got["ContentType"].startswith("text/plain")
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        s3.copy_object(Bucket="plain", Key="copy/x", CopySource="plain/copy/nothing-here")
    assert code_of(missing.value) == ("NoSuchKey", 404)
    deleted = s3.delete_objects(Bucket="plain", Delete={"Objects": [
        {"Key": "copy/source.txt"}, {"Key": "copy/never-existed"}, {"Key": "../escape"},
    ]})
    assert {item["Key"] for item in deleted["Deleted"]} == {"copy/source.txt", "copy/never-existed"}
    assert [(e["Key"], e["Code"]) for e in deleted["Errors"]] == [("../escape", "InvalidArgument")]
    assert "Contents" not in s3.list_objects_v2(Bucket="plain", Prefix="copy/")


def test_multipart_upload_writes_one_object_at_completion(s3: Any, database_url: str) -> None:
    first, second = os.urandom(5 * MiB), os.urandom(1234)
    upload = s3.create_multipart_upload(Bucket="plain", Key="big/file.bin", ContentType="application/x-thing")
    upload_id = upload["UploadId"]
    one = s3.upload_part(Bucket="plain", Key="big/file.bin", UploadId=upload_id, PartNumber=1, Body=first)
    stale = s3.upload_part(Bucket="plain", Key="big/file.bin", UploadId=upload_id, PartNumber=2, Body=b"replaced")
    two = s3.upload_part(Bucket="plain", Key="big/file.bin", UploadId=upload_id, PartNumber=2, Body=second)
    assert one["ETag"] == f'"{hashlib.md5(first).hexdigest()}"' and stale["ETag"] != two["ETag"]
    assert run_sql(database_url, "SELECT count(*) FROM storage.objects WHERE name = $1", "big/file.bin")[0][0] == 0
    listed = s3.list_parts(Bucket="plain", Key="big/file.bin", UploadId=upload_id)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, len(first)), (2, len(second))]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="plain")["Uploads"]] == [upload_id]
    with pytest.raises(botocore.exceptions.ClientError) as wrong_etag:
        s3.complete_multipart_upload(Bucket="plain", Key="big/file.bin", UploadId=upload_id, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": one["ETag"]}, {"PartNumber": 2, "ETag": stale["ETag"]}]})
    assert code_of(wrong_etag.value) == ("InvalidPart", 400)
    with pytest.raises(botocore.exceptions.ClientError) as out_of_order:
        s3.complete_multipart_upload(Bucket="plain", Key="big/file.bin", UploadId=upload_id, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": two["ETag"]}, {"PartNumber": 1, "ETag": one["ETag"]}]})
    assert code_of(out_of_order.value) == ("InvalidPartOrder", 400)
    done = s3.complete_multipart_upload(Bucket="plain", Key="big/file.bin", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": one["ETag"]}, {"PartNumber": 2, "ETag": two["ETag"]}]})
    assert done["ETag"] == f'"{hashlib.md5(first + second).hexdigest()}"'
    got = s3.get_object(Bucket="plain", Key="big/file.bin")
    assert got["Body"].read() == first + second and got["ContentType"] == "application/x-thing"
    assert run_sql(database_url, "SELECT count(*) FROM gatehouse.s3_multipart_parts WHERE upload_id = $1",
                   upload_id)[0][0] == 0
    with pytest.raises(botocore.exceptions.ClientError) as again:
        s3.upload_part(Bucket="plain", Key="big/file.bin", UploadId=upload_id, PartNumber=3, Body=b"late")
    assert code_of(again.value) == ("NoSuchUpload", 404)


def test_small_parts_are_refused_and_abort_removes_the_upload(s3: Any, database_url: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket="plain", Key="small.bin")["UploadId"]
    parts = [s3.upload_part(Bucket="plain", Key="small.bin", UploadId=upload_id, PartNumber=n, Body=b"tiny")["ETag"]
             for n in (1, 2)]
    with pytest.raises(botocore.exceptions.ClientError) as small:
        s3.complete_multipart_upload(Bucket="plain", Key="small.bin", UploadId=upload_id, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in zip((1, 2), parts, strict=True)]})
    assert code_of(small.value) == ("EntityTooSmall", 400)
    for number in ("0", "10001", "-1", "x"):
        raw = httpx.put(s3.generate_presigned_url("upload_part", Params={
            "Bucket": "plain", "Key": "small.bin", "UploadId": upload_id, "PartNumber": 1}).replace(
            "partNumber=1", f"partNumber={number}"), content=b"x")
        assert raw.status_code in (400, 403), raw.text  # a changed signed query: refused either way
    with pytest.raises(botocore.exceptions.ClientError) as bad_number:
        s3.upload_part(Bucket="plain", Key="small.bin", UploadId=upload_id, PartNumber=10001, Body=b"x")
    assert code_of(bad_number.value) == ("InvalidArgument", 400)
    s3.abort_multipart_upload(Bucket="plain", Key="small.bin", UploadId=upload_id)
    assert run_sql(database_url, "SELECT count(*) FROM gatehouse.s3_multipart_parts WHERE upload_id = $1",
                   upload_id)[0][0] == 0  # their bytes were queued by trigger, for the janitor
    with pytest.raises(botocore.exceptions.ClientError) as aborted:
        s3.list_parts(Bucket="plain", Key="small.bin", UploadId=upload_id)
    assert code_of(aborted.value) == ("NoSuchUpload", 404)


def test_bucket_limits_apply_to_put_and_to_multipart(s3: Any, database_url: str) -> None:
    s3.create_bucket(Bucket="tight")
    run_sql(database_url, "UPDATE storage.buckets SET file_size_limit = 1000, allowed_mime_types = '{text/plain}' "
                          "WHERE id = 'tight'")
    s3.put_object(Bucket="tight", Key="ok.txt", Body=b"fits", ContentType="text/plain")
    with pytest.raises(botocore.exceptions.ClientError) as too_big:
        s3.put_object(Bucket="tight", Key="big.txt", Body=b"x" * 1001, ContentType="text/plain")
    assert code_of(too_big.value) == ("EntityTooLarge", 400)
    with pytest.raises(botocore.exceptions.ClientError) as wrong_type:
        s3.put_object(Bucket="tight", Key="pic.png", Body=png(), ContentType="image/png")
    assert code_of(wrong_type.value) == ("InvalidRequest", 400)
    upload_id = s3.create_multipart_upload(Bucket="tight", Key="parts.txt", ContentType="text/plain")["UploadId"]
    s3.upload_part(Bucket="tight", Key="parts.txt", UploadId=upload_id, PartNumber=1, Body=b"x" * 600)
    with pytest.raises(botocore.exceptions.ClientError) as over:
        s3.upload_part(Bucket="tight", Key="parts.txt", UploadId=upload_id, PartNumber=2, Body=b"x" * 600)
    assert code_of(over.value) == ("EntityTooLarge", 400)
    with pytest.raises(botocore.exceptions.ClientError) as refused_type:
        s3.create_multipart_upload(Bucket="tight", Key="parts.png", ContentType="image/png")
    assert code_of(refused_type.value) == ("InvalidRequest", 400)
    assert [item["Key"] for item in s3.list_objects_v2(Bucket="tight")["Contents"]] == ["ok.txt"]


def test_a_users_session_token_is_held_to_rls(
    s3: Any, server: RunningServer, confirmed_session: ConfirmedSession, database_url: str
) -> None:
    _, alice = confirmed_session(server)
    _, bob = confirmed_session(server)
    alice_s3, bob_s3 = as_user(server, alice), as_user(server, bob)
    alice_id, bob_id = alice["user"]["id"], bob["user"]["id"]
    alice_s3.put_object(Bucket="mine", Key=f"{alice_id}/diary.txt", Body=b"dear diary")
    owner = run_sql(database_url, "SELECT owner::text FROM storage.objects WHERE name = $1", f"{alice_id}/diary.txt")
    assert owner[0][0] == alice_id
    assert alice_s3.get_object(Bucket="mine", Key=f"{alice_id}/diary.txt")["Body"].read() == b"dear diary"
    params = {"Bucket": "mine", "Key": f"{alice_id}/diary.txt"}
    assert httpx.get(alice_s3.generate_presigned_url("get_object", Params=params)).content == b"dear diary"
    assert httpx.get(bob_s3.generate_presigned_url("get_object", Params=params)).status_code == 404
    listed = bob_s3.list_objects_v2(Bucket="mine", Prefix=f"{alice_id}/")
    assert listed["KeyCount"] == 0 and "Contents" not in listed
    for operation in (bob_s3.get_object, bob_s3.head_object):
        with pytest.raises(botocore.exceptions.ClientError) as hidden:
            operation(Bucket="mine", Key=f"{alice_id}/diary.txt")
        assert code_of(hidden.value)[1] == 404
    with pytest.raises(botocore.exceptions.ClientError) as overwrite:
        bob_s3.put_object(Bucket="mine", Key=f"{alice_id}/diary.txt", Body=b"bob was here")
    assert code_of(overwrite.value) == ("AccessDenied", 403)
    bob_s3.delete_object(Bucket="mine", Key=f"{alice_id}/diary.txt")  # S3 answers 204; nothing is deleted
    bulk = bob_s3.delete_objects(Bucket="mine", Delete={"Objects": [{"Key": f"{alice_id}/diary.txt"}]})
    assert [e["Code"] for e in bulk["Errors"]] == ["AccessDenied"] and "Deleted" not in bulk
    with pytest.raises(botocore.exceptions.ClientError) as steal:
        bob_s3.copy_object(Bucket="mine", Key=f"{bob_id}/stolen.txt",
                           CopySource={"Bucket": "mine", "Key": f"{alice_id}/diary.txt"})
    assert code_of(steal.value) == ("NoSuchKey", 404)
    assert alice_s3.get_object(Bucket="mine", Key=f"{alice_id}/diary.txt")["Body"].read() == b"dear diary"
    with pytest.raises(botocore.exceptions.ClientError) as not_service:
        bob_s3.create_bucket(Bucket="bobs")
    assert code_of(not_service.value) == ("AccessDenied", 403)

    # Multipart: RLS decides once, at completion, and another user cannot touch the upload.
    upload_id = bob_s3.create_multipart_upload(Bucket="mine", Key=f"{alice_id}/planted.txt")["UploadId"]
    etag = bob_s3.upload_part(Bucket="mine", Key=f"{alice_id}/planted.txt", UploadId=upload_id, PartNumber=1,
                              Body=b"planted")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as foreign:
        alice_s3.list_parts(Bucket="mine", Key=f"{alice_id}/planted.txt", UploadId=upload_id)
    assert code_of(foreign.value) == ("NoSuchUpload", 404)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        bob_s3.complete_multipart_upload(Bucket="mine", Key=f"{alice_id}/planted.txt", UploadId=upload_id,
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert code_of(refused.value) == ("AccessDenied", 403)
    assert run_sql(database_url, "SELECT count(*) FROM storage.objects WHERE name = $1", f"{alice_id}/planted.txt")[0][0] == 0
    bob_s3.abort_multipart_upload(Bucket="mine", Key=f"{alice_id}/planted.txt", UploadId=upload_id)
    own = bob_s3.create_multipart_upload(Bucket="mine", Key=f"{bob_id}/own.txt")["UploadId"]
    part = bob_s3.upload_part(Bucket="mine", Key=f"{bob_id}/own.txt", UploadId=own, PartNumber=1, Body=b"mine")
    bob_s3.complete_multipart_upload(Bucket="mine", Key=f"{bob_id}/own.txt", UploadId=own,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert bob_s3.get_object(Bucket="mine", Key=f"{bob_id}/own.txt")["Body"].read() == b"mine"


def test_presigned_urls_work_until_they_expire(s3: Any) -> None:
    s3.put_object(Bucket="plain", Key="shared/photo.png", Body=png(), ContentType="image/png")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "plain", "Key": "shared/photo.png"}, ExpiresIn=60)
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.content == png()
    upload = s3.generate_presigned_url("put_object", Params={"Bucket": "plain", "Key": "shared/up.txt"}, ExpiresIn=60)
    assert httpx.put(upload, content=b"via a presigned URL").status_code == 200
    assert s3.get_object(Bucket="plain", Key="shared/up.txt")["Body"].read() == b"via a presigned URL"
    tampered = url.replace("shared%2Fphoto.png", "shared%2Fup.txt").replace("shared/photo.png", "shared/up.txt")
    refused = httpx.get(tampered)
    assert refused.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in refused.content


def test_the_cli_lists_and_deletes_keys(server: RunningServer) -> None:
    access_key, secret = issue_key(server, "to be deleted")
    client = s3_client(server, access_key, secret)
    client.list_buckets()

    def cli(*args: str) -> str:
        return subprocess.run(gatehouse_command("s3-keys", "--data-dir", str(server.data_dir), *args), env=server.env,
                              capture_output=True, text=True, timeout=120, check=True).stdout

    listing = cli("list")
    assert access_key in listing and "to be deleted" in listing and secret not in listing
    assert f"deleted {access_key}" in cli("delete", access_key)
    with pytest.raises(botocore.exceptions.ClientError) as deleted:
        client.list_buckets()
    assert code_of(deleted.value) == ("InvalidAccessKeyId", 403)


def test_aws_chunked_bodies_as_botocore_sends_them_over_https(s3: Any, server: RunningServer) -> None:
    """Over HTTPS botocore streams PutObject and UploadPart as STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32
    trailer. The same client is pointed at an https:// endpoint, and each request it prepares is sent over
    plain HTTP to the live server (SigV4 signs the host and path, not the scheme)."""
    credentials = s3._request_signer._credentials
    secure = s3_client(server, credentials.access_key, credentials.secret_key,
                       endpoint=server.url.replace("http://", "https://") + "/storage/v1/s3")
    sent: list[str] = []
    tamper: list[Callable[[bytes], bytes]] = []

    def over_plain_http(request: Any, **_: Any) -> Any:
        body = request.body.read() if hasattr(request.body, "read") else request.body or b""
        headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()
                   if k.lower() != "transfer-encoding"}  # httpx frames the body itself: chunked, for an iterator
        sent.append(headers.get("X-Amz-Content-SHA256", ""))
        for change in tamper:
            body = change(body)
        answer = httpx.request(request.method, request.url.replace("https://", "http://", 1), headers=headers,
                               content=iter([body]), timeout=30)
        raw = io.BytesIO(answer.content)
        raw.stream = lambda *a, **k: iter([answer.content])  # type: ignore[attr-defined]
        return AWSResponse(request.url, answer.status_code, dict(answer.headers), raw)

    secure.meta.events.register("before-send.s3", over_plain_http)
    data = os.urandom(300_000)
    secure.put_object(Bucket="plain", Key="chunked.bin", Body=io.BytesIO(data))
    assert sent == ["STREAMING-UNSIGNED-PAYLOAD-TRAILER"]
    assert s3.get_object(Bucket="plain", Key="chunked.bin")["Body"].read() == data
    tamper.append(lambda body: body.replace(data[:1000], bytes(1000), 1))  # the bytes, not the trailer, change
    with pytest.raises(botocore.exceptions.ClientError) as corrupted:
        secure.put_object(Bucket="plain", Key="chunked.bin", Body=io.BytesIO(data))
    assert code_of(corrupted.value) == ("BadDigest", 400)
    assert s3.get_object(Bucket="plain", Key="chunked.bin")["Body"].read() == data


async def test_abandoned_uploads_are_swept_and_staged_parts_are_not_orphans(
    s3: Any, server: RunningServer, database_url: str
) -> None:
    fresh = s3.create_multipart_upload(Bucket="plain", Key="janitor/fresh.bin")["UploadId"]
    old = s3.create_multipart_upload(Bucket="plain", Key="janitor/old.bin")["UploadId"]
    for upload_id, key in ((fresh, "janitor/fresh.bin"), (old, "janitor/old.bin")):
        s3.upload_part(Bucket="plain", Key=key, UploadId=upload_id, PartNumber=1, Body=b"staged bytes")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    backend = create_backend(SimpleNamespace(data_dir=server.data_dir))
    try:
        # The orphan sweep keeps a staged part's bytes: a row names them, though not storage.objects'.
        await BlobJanitor(pool, backend).sweep(min_age=timedelta(0), spool_age=timedelta(days=1))
        fresh_key = await pool.fetchval("SELECT bucket_id || '/' || version FROM gatehouse.s3_multipart_parts "
                                        "WHERE upload_id = $1", fresh)
        assert await backend.size(fresh_key) == len(b"staged bytes")
        await pool.execute("UPDATE gatehouse.s3_multipart_uploads SET created_at = now() - interval '2 days' "
                           "WHERE id = $1", old)
        old_key = await pool.fetchval("SELECT bucket_id || '/' || version FROM gatehouse.s3_multipart_parts "
                                      "WHERE upload_id = $1", old)
        assert await MultipartJanitor(pool, expiry=86_400).sweep() == 1
        assert await pool.fetchval("SELECT count(*) FROM storage.deleted_blobs WHERE key = $1", old_key) == 1
        await BlobJanitor(pool, backend).process()
        assert await backend.size(old_key) is None and await backend.size(fresh_key) is not None
    finally:
        await pool.close()
        await backend.close()
    with pytest.raises(botocore.exceptions.ClientError) as expired:
        s3.list_parts(Bucket="plain", Key="janitor/old.bin", UploadId=old)
    assert code_of(expired.value) == ("NoSuchUpload", 404)
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="plain", Key="janitor/fresh.bin", UploadId=fresh)["Parts"]] == [1]


def test_no_request_was_answered_with_a_server_error(server: RunningServer) -> None:
    log = server.log()
    assert '"status":500' not in log and "unhandled error" not in log
