"""The on-disk cache of rendered variants: hits, misses, limits, pruning and concurrent renders."""

from __future__ import annotations

import asyncio
import io
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.images import Transform, render
from gatehouse.storage.render_cache import RenderCache
from gatehouse.storage.sniff import sniff_mime


def noise(size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3))


def save(path: Path, img: Image.Image, fmt: str | None = None) -> Path:
    img.save(path, format=fmt)
    return path


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.fixture
def wide_png(tmp_path: Path) -> Path:
    return save(tmp_path / "wide.png", noise((400, 200)))


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class CountingRenderer:
    """The real renderer, counted; or fixed bytes when ``payload`` is given."""

    def __init__(self, payload: bytes | None = None, barrier: threading.Barrier | None = None) -> None:
        self.calls: list[tuple[Path, str]] = []
        self.payload = payload
        self.barrier = barrier

    def __call__(self, source: Path, transform: Transform) -> tuple[bytes, str]:
        self.calls.append((source, transform.key))
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        if self.payload is not None:
            return self.payload, "image/png"
        return render(source, transform)


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


async def test_cache_miss_then_hit(tmp_path: Path, wide_png: Path) -> None:
    renderer = CountingRenderer()
    cache = RenderCache(tmp_path / "cache", renderer=renderer)
    path, content_type = await cache.get_or_render("bucket/a.png@v1", wide_png, Transform(width=100, format="webp"))
    assert content_type == "image/webp" and path.suffix == ".webp"
    assert decode(path.read_bytes()).size == (100, 50)
    again = await cache.get_or_render("bucket/a.png@v1", wide_png, Transform(width=100, format="webp"))
    assert again == (path, content_type)
    assert len(renderer.calls) == 1
    await cache.get_or_render("bucket/a.png@v1", wide_png, Transform(width=50, format="webp"))  # another variant
    await cache.get_or_render("bucket/a.png@v2", wide_png, Transform(width=100, format="webp"))  # another version
    assert len(renderer.calls) == 3
    assert len(files(tmp_path / "cache")) == 3


async def test_origin_variants_keep_their_type(tmp_path: Path) -> None:
    source = save(tmp_path / "p.jpg", noise((64, 64)), "JPEG")
    path, content_type = await RenderCache(tmp_path / "cache").get_or_render("k", source, Transform(width=32))
    assert (path.suffix, content_type) == (".jpg", "image/jpeg")
    assert sniff_mime(path.read_bytes()) == "image/jpeg"


async def test_a_lazy_source_is_fetched_only_on_a_miss(tmp_path: Path, wide_png: Path) -> None:
    fetched: list[int] = []

    async def fetch() -> Path:
        fetched.append(1)
        return wide_png

    cache = RenderCache(tmp_path / "cache")
    first = await cache.get_or_render("k", fetch, Transform(width=10))
    second = await cache.get_or_render("k", fetch, Transform(width=10))
    assert first == second and len(fetched) == 1


async def test_the_miss_hook_and_pixel_limit_bound_new_renders_only(tmp_path: Path, wide_png: Path) -> None:
    """``on_miss`` runs (and may refuse) before a miss is rendered, never on a hit; a per-call pixel
    limit refuses a big source from its header, and a variant already rendered is still served."""
    misses: list[int] = []

    async def count() -> None:
        misses.append(1)
        if len(misses) > 2:
            raise GatehouseError("SlowDown", "too many", status=429)

    cache = RenderCache(tmp_path / "cache")
    wide = Transform(width=20)
    await cache.get_or_render("k", wide_png, wide, on_miss=count)
    await cache.get_or_render("k", wide_png, wide, on_miss=count)  # a hit: not counted
    assert len(misses) == 1
    with pytest.raises(GatehouseError) as big:  # 400 x 200 = 80,000 pixels
        await cache.get_or_render("k", wide_png, Transform(width=30), max_input_pixels=79_999, on_miss=count)
    assert big.value.code == "EntityTooLarge" and big.value.status == 413
    with pytest.raises(GatehouseError) as refused:
        await cache.get_or_render("k", wide_png, Transform(width=40), on_miss=count)
    assert refused.value.status == 429
    assert len(files(tmp_path / "cache")) == 1
    hit = await cache.get_or_render("k", wide_png, wide, max_input_pixels=1, on_miss=count)
    assert decode(hit[0].read_bytes()).size == (20, 10) and len(misses) == 3


async def test_render_errors_propagate_and_nothing_is_cached(tmp_path: Path) -> None:
    source = tmp_path / "junk"
    source.write_bytes(b"not an image")
    cache = RenderCache(tmp_path / "cache")
    for _ in range(2):
        with pytest.raises(GatehouseError) as caught:
            await cache.get_or_render("k", source, Transform(width=10))
        assert caught.value.code == "InvalidImage"
    assert files(tmp_path / "cache") == []


async def test_least_recently_used_variants_are_pruned(tmp_path: Path) -> None:
    clock = Clock()
    renderer = CountingRenderer(payload=b"x" * 1000)
    cache = RenderCache(tmp_path / "cache", max_bytes=3500, renderer=renderer, now=clock)
    source = tmp_path / "unused"

    async def get(name: str) -> Path:
        clock.now += 1
        return (await cache.get_or_render(name, source, Transform()))[0]

    a, b, c = await get("a"), await get("b"), await get("c")
    assert await get("a") == a  # a hit: now b is the least recently used
    d = await get("d")  # 4000 bytes > 3500: trim to 90 %
    assert [p.exists() for p in (a, b, c, d)] == [True, False, True, True]
    assert len(renderer.calls) == 4
    await get("b")
    assert len(renderer.calls) == 5  # rendered again


async def test_a_variant_bigger_than_the_cache_is_still_returned(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path / "cache", max_bytes=10, renderer=CountingRenderer(payload=b"x" * 100))
    path, _ = await cache.get_or_render("k", tmp_path, Transform())
    assert path.read_bytes() == b"x" * 100


async def test_prune_counts_what_is_already_on_disk(tmp_path: Path) -> None:
    clock = Clock()
    first = RenderCache(tmp_path / "cache", renderer=CountingRenderer(payload=b"x" * 1000), now=clock)
    for name in "abc":
        clock.now += 1
        await first.get_or_render(name, tmp_path, Transform())
    restarted = RenderCache(tmp_path / "cache", max_bytes=2000, renderer=CountingRenderer(payload=b"y" * 10), now=clock)
    assert await restarted.prune() == 1000
    assert len(files(tmp_path / "cache")) == 1


async def test_stale_temp_files_are_swept(tmp_path: Path) -> None:
    clock = Clock(start=100_000.0)
    cache = RenderCache(tmp_path / "cache", renderer=CountingRenderer(payload=b"x"), now=clock)
    path, _ = await cache.get_or_render("k", tmp_path, Transform())
    stale, fresh = path.parent / ".tmp-crashed.part", path.parent / ".tmp-in-flight.part"
    for temp, mtime in ((stale, 0.0), (fresh, clock.now - 10)):
        temp.write_bytes(b"half")
        os.utime(temp, (mtime, mtime))
    assert await cache.prune() == 1  # temp files don't count
    assert not stale.exists() and fresh.exists()


async def test_concurrent_requests_render_a_variant_once(tmp_path: Path, wide_png: Path) -> None:
    renderer = CountingRenderer()
    cache = RenderCache(tmp_path / "cache", renderer=renderer)
    results = await asyncio.gather(*(cache.get_or_render("k", wide_png, Transform(width=64)) for _ in range(8)))
    assert len(set(results)) == 1 and len(renderer.calls) == 1


async def test_two_processes_rendering_one_variant_leave_one_whole_file(tmp_path: Path, wide_png: Path) -> None:
    # Two caches on one folder stand for two worker processes: their locks don't see each other.
    barrier = threading.Barrier(2)  # both renders are in flight before either is written
    one, two = CountingRenderer(barrier=barrier), CountingRenderer(barrier=barrier)
    caches = [RenderCache(tmp_path / "cache", renderer=r) for r in (one, two)]
    (path1, _), (path2, _) = await asyncio.gather(*(c.get_or_render("k", wide_png, Transform(width=64)) for c in caches))
    assert path1 == path2 and len(one.calls) == len(two.calls) == 1
    assert files(tmp_path / "cache") == [path1.name]  # no temp file left behind
    assert decode(path1.read_bytes()).size == (64, 32)


async def test_discard_removes_every_variant_of_a_version(tmp_path: Path, wide_png: Path) -> None:
    cache = RenderCache(tmp_path / "cache")
    for width in (10, 20, 30):
        await cache.get_or_render("bucket/a@1", wide_png, Transform(width=width))
    kept, _ = await cache.get_or_render("bucket/b@1", wide_png, Transform(width=10))
    assert await cache.discard("bucket/a@1") == 3
    assert await cache.discard("never/seen") == 0
    assert files(tmp_path / "cache") == [kept.name]


def test_cache_paths_are_safe_whatever_the_key(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path / "cache")
    name: Callable[[str, Transform], tuple[Path, str]] = cache._name
    shard, stem = name("../../etc/passwd\x00", Transform())
    assert shard.parent == tmp_path / "cache" and "/" not in stem and ".." not in stem
