"""Shared by the storage tests: a signed-in user's raw HTTP client for this module's ``server``, and a bucket on the session's S3 server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.deploy.components import SeaweedS3
from tests.support import ConfirmedSession, RunningServer

_buckets = itertools.count(1)

@dataclass(frozen=True)
class S3Bucket:
    """A bucket of its own on the session's SeaweedFS for one module: a boto3 client and Gatehouse's settings."""

    name: str
    client: Any
    env: dict[str, str]


@pytest.fixture(scope="module")
def s3(seaweedfs: SeaweedS3) -> Iterator[S3Bucket]:
    """A fresh bucket on SeaweedFS's S3 gateway (a real S3-compatible server) for this module's Gatehouse."""
    name = f"gatehouse-blobs-{next(_buckets)}"
    client = seaweedfs.client()
    client.create_bucket(Bucket=name)
    yield S3Bucket(name, client, {"GATEHOUSE_RATE_LIMITS_ENABLED": "false", **seaweedfs.env(name)})
    client.close()


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
