"""Image renders of stored objects: who may have how large a source rendered, how often.

Rendering is CPU work on untrusted bytes, so new renders (cache misses) are bounded twice:
by the size of the source a caller may have decoded, and by a rate limit per client address.
A variant already in the cache is served whatever either says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.core.ratelimit import RateLimited, RateLimiter
from gatehouse.storage.admission import local_copy
from gatehouse.storage.backends.base import Backend
from gatehouse.storage.images import Transform
from gatehouse.storage.models import StoredObject
from gatehouse.storage.render_cache import RenderCache


class Renders:
    def __init__(self, database: Database, backend: Backend, settings: Settings) -> None:
        self.db = database
        self.backend = backend
        self.settings = settings
        self.limiter = RateLimiter(settings)

    async def render(
        self, cache: RenderCache, obj: StoredObject, transform: Transform, claims: dict[str, Any] | None, address: str,
    ) -> tuple[Path, str]:
        """The rendered variant's path and content type, from the cache or rendered now for
        ``claims`` (None: a public or signed URL) at ``address``."""
        downloaded: list[Path] = []

        async def on_miss() -> None:
            await self.count(claims, address)

        async def source() -> Path:
            local = await local_copy(self.backend, obj)
            if self.backend.local_path(obj.key) is None:
                downloaded.append(local)  # a copy made for rendering: ours to remove
            return local

        try:
            return await cache.get_or_render(
                obj.key, source, transform, max_input_pixels=self.pixel_limit(claims), on_miss=on_miss
            )
        finally:
            for path in downloaded:
                path.unlink(missing_ok=True)

    def pixel_limit(self, claims: dict[str, Any] | None) -> int:
        """The largest source a caller may have rendered: anonymous callers and public or signed URLs
        (``claims`` None) get the lower limit; signed-in users and the service role the higher."""
        role = (claims or {}).get("role")
        if role in ("authenticated", "service_role"):
            return self.settings.storage_render_max_pixels
        return self.settings.storage_render_max_pixels_public

    async def count(self, claims: dict[str, Any] | None, address: str) -> None:
        """Count one new render (a cache miss) for a client address; over the limit, 429.

        The service role (trusted server code, often rendering for many users) is not counted.
        """
        if (claims or {}).get("role") == "service_role":
            return
        try:
            await self.limiter.hit(self.db.admin, f"render:ip:{address}", self.limiter.limits.render)
        except RateLimited as exc:
            raise GatehouseError(
                "SlowDown", f"Too many new image renders from this address; try again in {exc.retry_after} seconds",
                status=429, http_status=429, retry_after=exc.retry_after,
            ) from None
