"""Rendered image variants on disk, so that each transformation of one object version is rendered once.

The renders themselves are ``storage.images``; this module names, stores, finds and prunes
their results (see :class:`RenderCache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from gatehouse.storage.images import MAX_INPUT_PIXELS, Transform, render

__all__ = ["RenderCache"]

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/avif": "avif"}
#: Bump when rendering changes, so that old variants are not served (they age out by LRU).
_RENDER_VERSION = "r1"
#: Temp files older than this are left over from a crash; pruning removes them.
_STALE_TEMP_SECONDS = 3600.0

Renderer = Callable[[Path, Transform], tuple[bytes, str]]
Source = Path | Callable[[], Awaitable[Path]]


class RenderCache:
    """Rendered variants on disk, keyed by (blob version key, :attr:`Transform.key`).

    ``folder_key`` names one immutable version of an object (say ``bucket/name@version``): a
    new upload gets a new key, so variants never go stale, they only age out. Variants live in
    ``root/<2 hex>/<hash of folder_key>-r1-<transform key>.<ext>``.

    * Writes go to a temp file in the same directory and are renamed into place, so a reader in
      any process sees a whole file or none. Two processes rendering one variant both finish and
      the last rename wins; within a process, concurrent requests for a variant render it once.
    * The total size is kept near ``max_bytes``: when this process's running estimate passes it,
      the folder is scanned and the least recently used variants (by mtime, which a hit
      refreshes) are deleted down to 90 %. With several processes the bound is approximate.
    * A returned path may be pruned later by another request: open it straight away (an open
      file survives deletion).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = 256 * 2**20,
        max_input_pixels: int = MAX_INPUT_PIXELS,
        max_concurrent: int | None = None,
        renderer: Renderer | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_input_pixels = max_input_pixels
        self._renderer = renderer
        self._now = now
        self._renders = asyncio.Semaphore(max_concurrent or os.cpu_count() or 2)
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._prune_lock = asyncio.Lock()
        self._total: int | None = None  # unknown until the first scan

    async def get_or_render(
        self,
        folder_key: str,
        source: Source,
        transform: Transform,
        *,
        max_input_pixels: int | None = None,
        on_miss: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[Path, str]:
        """The cached variant's path and content type, rendering it first on a miss.

        ``source`` is the original's path, or an async callable giving it, awaited only on a
        miss (for backends that must download the blob first; cleaning that file up is the
        caller's job). Render errors propagate and nothing is cached.

        On a miss, ``on_miss`` is awaited first (a rate limit: it may raise to refuse the render),
        and a source above ``max_input_pixels`` (default: the cache's) is refused from its header,
        before it is decoded. Both bound the work of rendering, so a hit is served whatever they say.
        """
        shard, stem = self._name(folder_key, transform)
        if hit := self._lookup(shard, stem):
            return hit
        async with self._variant_lock(stem):
            if hit := self._lookup(shard, stem):
                return hit
            if on_miss is not None:
                await on_miss()
            path = source if isinstance(source, Path) else await source()
            renderer = self._renderer or functools.partial(
                render, max_input_pixels=max_input_pixels or self.max_input_pixels
            )
            async with self._renders:
                data, content_type = await asyncio.to_thread(renderer, path, transform)
            target = await asyncio.to_thread(self._write, shard, stem, data, content_type)
        await self._account(len(data), keep=target)
        return target, content_type

    async def discard(self, folder_key: str) -> int:
        """Delete every variant of one blob version (say, when the object is deleted); how many."""
        return await asyncio.to_thread(self._discard, folder_key)

    async def prune(self) -> int:
        """Scan the folder and trim it to ``max_bytes``; the size left."""
        async with self._prune_lock:
            return await asyncio.to_thread(self._prune, None)

    def _name(self, folder_key: str, transform: Transform) -> tuple[Path, str]:
        digest = hashlib.sha256(folder_key.encode()).hexdigest()[:40]
        return self.root / digest[:2], f"{digest}-{_RENDER_VERSION}-{transform.key}"

    def _lookup(self, shard: Path, stem: str) -> tuple[Path, str] | None:
        """A hit refreshes the variant's mtime, which is what pruning orders by."""
        now = self._now()
        for content_type, ext in _EXTENSIONS.items():
            path = shard / f"{stem}.{ext}"
            try:
                os.utime(path, (now, now))
            except FileNotFoundError:
                continue
            return path, content_type
        return None

    @contextlib.asynccontextmanager
    async def _variant_lock(self, stem: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(stem, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[stem]

    def _write(self, shard: Path, stem: str, data: bytes, content_type: str) -> Path:
        shard.mkdir(parents=True, exist_ok=True)
        target = shard / f"{stem}.{_EXTENSIONS[content_type]}"
        fd, temp = tempfile.mkstemp(dir=shard, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fp:
                fp.write(data)
                fp.flush()
                os.fsync(fp.fileno())  # a crash must not leave a renamed but empty variant
            now = self._now()
            os.utime(temp, (now, now))
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return target

    async def _account(self, size: int, *, keep: Path) -> None:
        if self._total is not None:
            self._total += size
            if self._total <= self.max_bytes:
                return
        async with self._prune_lock:
            await asyncio.to_thread(self._prune, keep)

    def _prune(self, keep: Path | None) -> int:
        variants: list[tuple[float, int, str]] = []
        total = 0
        stale = self._now() - _STALE_TEMP_SECONDS
        shards = [e.path for e in os.scandir(self.root) if e.is_dir()] if self.root.is_dir() else []
        for shard in shards:
            for entry in os.scandir(shard):
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                if entry.name.startswith(".tmp-"):
                    if stat.st_mtime < stale:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                    continue
                variants.append((stat.st_mtime, stat.st_size, entry.path))
                total += stat.st_size
        if total > self.max_bytes:
            goal = self.max_bytes * 9 // 10
            for _, size, path in sorted(variants):
                if total <= goal:
                    break
                if keep is not None and path == str(keep):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                total -= size
        self._total = total
        return total

    def _discard(self, folder_key: str) -> int:
        shard, stem = self._name(folder_key, Transform())
        prefix = stem.split("-", 1)[0] + "-"
        removed = 0
        if not shard.is_dir():
            return 0
        for entry in os.scandir(shard):
            if entry.name.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed
