"""The remembered-bucket rule (``BucketView``): a remembered copy only ever lets a request through; and
the remembered buckets are bounded."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from gatehouse.core.config import load_settings
from gatehouse.core.errors import GatehouseError
from gatehouse.storage.buckets import REMEMBERED, Buckets, BucketView
from gatehouse.storage.errors import bad_type
from gatehouse.storage.models import Bucket

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def bucket(*types: str) -> Bucket:
    return Bucket("docs", "docs", None, False, None, list(types) or None, False, NOW, NOW)


class Reads(Buckets):
    """Buckets whose every fresh read gives the next of ``stored`` (the last one repeats)."""

    def __init__(self, *stored: Bucket) -> None:
        self.stored = list(stored)
        self.reads = 0

    async def current(self, bucket_id: str) -> Bucket:
        self.reads += 1
        return self.stored[min(self.reads, len(self.stored)) - 1]


def only_text(b: Bucket) -> str:
    if b.allowed_mime_types and "text/plain" not in b.allowed_mime_types:
        raise bad_type("text/plain")
    return "text/plain"


async def test_a_remembered_copy_that_lets_through_costs_no_read() -> None:
    reads = Reads(bucket())
    view = BucketView(reads, bucket(), fresh=False)
    assert await view.check(only_text) == "text/plain" and reads.reads == 0


async def test_a_refusal_of_a_remembered_copy_is_confirmed_on_a_fresh_read() -> None:
    reads = Reads(bucket())  # the bucket now takes anything
    view = BucketView(reads, bucket("image/png"), fresh=False)
    assert await view.check(only_text) == "text/plain" and reads.reads == 1 and view.fresh
    refused = BucketView(Reads(bucket("image/png")), bucket("image/png"), fresh=False)
    with pytest.raises(GatehouseError, match="not supported"):
        await refused.check(only_text)


async def test_a_refusal_of_a_fresh_copy_is_final() -> None:
    reads = Reads(bucket())
    with pytest.raises(GatehouseError):
        await BucketView(reads, bucket("image/png"), fresh=True).check(only_text)
    assert reads.reads == 0


async def test_settle_writes_again_when_the_settings_changed_under_the_write() -> None:
    reads = Reads(bucket())
    view = BucketView(reads, bucket(), fresh=True)
    written: list[Bucket] = []

    async def write(b: Bucket, checked: str) -> str | None:
        written.append(b)
        return None if len(written) == 1 else checked

    assert await view.settle(only_text, write) == "text/plain"
    assert len(written) == 2 and reads.reads == 1


async def test_settle_gives_up_on_a_bucket_that_keeps_changing() -> None:
    view = BucketView(Reads(bucket()), bucket(), fresh=True)

    async def never(b: Bucket, checked: str) -> str | None:
        return None

    with pytest.raises(GatehouseError) as refused:
        await view.settle(only_text, never)
    assert refused.value.code == "BucketChanged" and refused.value.status == 409


async def test_settle_refuses_when_the_fresh_read_refuses() -> None:
    reads = Reads(bucket("image/png"))
    view = BucketView(reads, bucket(), fresh=True)

    async def stale(b: Bucket, checked: str) -> str | None:
        return None  # the settings changed: the fresh read refuses text

    with pytest.raises(GatehouseError) as refused:
        await view.settle(only_text, stale)
    assert refused.value.code == "InvalidMimeType"


class Table:
    """A stand-in for the admin pool: every bucket id exists; counts the reads."""

    def __init__(self) -> None:
        self.reads = 0

    async def fetchrow(self, sql: str, bucket_id: str) -> dict[str, object]:
        self.reads += 1
        return {"id": bucket_id, "name": bucket_id, "owner": None, "public": False, "file_size_limit": None,
                "allowed_mime_types": None, "inline_documents": False, "created_at": NOW, "updated_at": NOW}


async def test_remembered_buckets_are_bounded_least_recently_used_first_out() -> None:
    table = Table()
    buckets = Buckets(SimpleNamespace(admin=table), load_settings())  # type: ignore[arg-type]
    await buckets.view("kept")
    for i in range(REMEMBERED + 50):
        await buckets.view(f"b{i}")
        if i % 100 == 0:
            await buckets.view("kept")  # used again: stays
    assert len(buckets._remembered) == REMEMBERED
    reads = table.reads
    assert not (await buckets.view("kept")).fresh and table.reads == reads
    assert (await buckets.view("b1")).fresh and table.reads == reads + 1  # the oldest went first
