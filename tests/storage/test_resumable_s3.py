"""Resumable uploads with the bytes in S3 (SeaweedFS's S3 gateway): each chunk an S3 object until the end."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gatehouse.core.db import Database
from gatehouse.storage.backends.s3 import S3Backend
from gatehouse.storage.janitor import BlobJanitor
from tests.storage.conftest import S3Bucket
from tests.storage.tus_helpers import CHUNK, Tus
from tests.support import RunningServer


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer], s3: S3Bucket) -> RunningServer:
    live = server_factory(env=s3.env)
    httpx.post(f"{live.url}/storage/v1/bucket", headers={"apikey": live.keys.secret_key},
               json={"id": "films"}).raise_for_status()
    return live


def s3_keys(s3: S3Bucket) -> set[str]:
    listing = s3.client.list_objects_v2(Bucket=s3.name)
    return {item["Key"] for item in listing.get("Contents", [])}


async def test_chunks_are_s3_objects_until_the_upload_ends(server: RunningServer, s3: S3Bucket,
                                                          db: Database, tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK + 17)
    with Tus(server, {"apikey": server.keys.secret_key}) as tus:
        url = tus.url("films", "reel.bin", len(data))
        assert tus.patch(url, 0, data[:CHUNK]).status_code == 204
        assert tus.patch(url, CHUNK, data[CHUNK:2 * CHUNK]).status_code == 204
        parts = s3_keys(s3)
        ordered = [row["key"] for row in await db.admin.fetch(
            "SELECT bucket_id || '/' || version AS key FROM storage.resumable_parts ORDER BY start_offset")]
        assert len(parts) == 2 and set(ordered) == parts
        stored = b"".join(
            s3.client.get_object(Bucket=s3.name, Key=key)["Body"].read()
            for key in ordered
        )
        assert stored == data[:2 * CHUNK]
        assert tus.patch(url, 2 * CHUNK, data[2 * CHUNK:]).headers["tus-complete"] == "1"
    got = httpx.get(f"{server.url}/storage/v1/object/films/reel.bin", headers={"apikey": server.keys.secret_key})
    assert got.content == data

    backend = S3Backend(endpoint_url=s3.env["GATEHOUSE_S3_ENDPOINT_URL"], bucket=s3.name, spool_dir=tmp_path,
                        access_key_id=s3.env["GATEHOUSE_S3_ACCESS_KEY_ID"],
                        secret_access_key=s3.env["GATEHOUSE_S3_SECRET_ACCESS_KEY"])
    while await BlobJanitor(db.admin, backend).process():
        pass
    await backend.close()
    remaining = s3_keys(s3)
    assert not parts & remaining and len(remaining) == 1  # the object's own bytes
