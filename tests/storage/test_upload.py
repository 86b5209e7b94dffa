"""Spooling an upload under a limit that may have changed: ``spool(..., recheck=...)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.upload import spool


async def body(size: int, chunk: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, size, chunk):
        yield b"x" * min(chunk, size - start)


async def test_over_a_remembered_limit_the_limit_in_force_is_asked_once(tmp_path: Path) -> None:
    asked: list[int] = []

    async def raised() -> int:
        asked.append(1)
        return 10_000

    spooled = await spool(body(5_000), spool_dir=tmp_path, content_type="text/plain", headers={}, limit=1_000,
                          hard_limit=50_000, recheck=raised)
    assert spooled.size == 5_000 and spooled.path.stat().st_size == 5_000 and asked == [1]

    async def still_low() -> int:
        return 2_000

    with pytest.raises(GatehouseError) as refused:
        await spool(body(5_000), spool_dir=tmp_path, content_type="text/plain", headers={}, limit=1_000,
                    hard_limit=50_000, recheck=still_low)
    assert refused.value.status == 413 and "2000" in refused.value.message
    assert list(tmp_path.iterdir()) == [spooled.path]  # the refused one left nothing behind


async def test_the_hard_limit_stops_the_body_whatever_the_recheck_would_say(tmp_path: Path) -> None:
    async def unlimited() -> int:
        raise AssertionError("not asked: the hard limit came first")

    with pytest.raises(GatehouseError) as refused:
        await spool(body(5_000, chunk=5_000), spool_dir=tmp_path, content_type="text/plain", headers={},
                    limit=1_000, hard_limit=3_000, recheck=unlimited)
    assert refused.value.status == 413 and "3000" in refused.value.message


async def test_a_multipart_body_is_rechecked_between_chunks(tmp_path: Path) -> None:
    boundary = "b0undary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"\"; filename=\"a.txt\"\r\n"
            f"Content-Type: text/plain\r\n\r\n").encode() + b"y" * 4_000 + f"\r\n--{boundary}--\r\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(form), 700):
            yield form[start:start + 700]

    async def raised() -> int:
        return 10_000

    spooled = await spool(chunks(), spool_dir=tmp_path, content_type=f"multipart/form-data; boundary={boundary}",
                          headers={}, limit=1_000, hard_limit=50_000, recheck=raised)
    assert spooled.size == 4_000 and spooled.path.read_bytes() == b"y" * 4_000
