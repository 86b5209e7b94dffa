"""Shared by the storage tests: a signed-in user's raw HTTP client for this module's ``server``, and an S3 server."""

from __future__ import annotations

from collections.abc import Iterator

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from moto.server import ThreadedMotoServer

from gatehouse.core.embedded import free_port
from tests.support import ConfirmedSession, RunningServer

#: What moto's S3 server accepts, and the bucket ``s3`` makes for Gatehouse's bytes.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
BLOBS = "gatehouse-blobs"


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, object]]:
    """moto's standalone S3 server (a stand-in where a fault must be injected): endpoint and a boto3 client."""
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)
    client.create_bucket(Bucket=BLOBS)
    yield endpoint, client
    # moto keeps its buckets in process-wide memory, shared by every server it starts: empty
    # this one, so the next module's tests see only their own objects.
    for item in client.list_objects_v2(Bucket=BLOBS).get("Contents", []):
        client.delete_object(Bucket=BLOBS, Key=item["Key"])
    client.delete_bucket(Bucket=BLOBS)
    client.close()
    moto.stop()


@pytest.fixture(scope="module")
def user(server: RunningServer, confirmed_session: ConfirmedSession) -> Iterator[tuple[httpx.Client, str]]:
    """(a client of /storage/v1 with a confirmed user's token, the user's id); ``server`` is the module's own."""
    _, session = confirmed_session(server)
    client = httpx.Client(
        base_url=f"{server.url}/storage/v1",
        headers={"apikey": server.keys.publishable_key, "Authorization": f"Bearer {session['access_token']}"},
        timeout=30,
    )
    yield client, session["user"]["id"]
    client.close()
