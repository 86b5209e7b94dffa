"""Where object bytes live: an interface (``base``), the local folder, S3, the in-memory fake, and the
factory that picks one from the settings.

The factory lives here, above the backends, so that ``base`` imports none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatehouse.core.config import ConfigError
from gatehouse.storage.backends.base import (
    CHUNK_SIZE,
    Backend,
    BackendError,
    BlobNotFound,
    BlobStream,
    InvalidRange,
    is_key,
    validate_key,
)
from gatehouse.storage.backends.local import LocalBackend
from gatehouse.storage.backends.memory import MemoryBackend
from gatehouse.storage.backends.s3 import S3Backend
from gatehouse.storage.backends.staging import Staging

__all__ = [
    "CHUNK_SIZE",
    "Backend",
    "BackendError",
    "BlobNotFound",
    "BlobStream",
    "InvalidRange",
    "LocalBackend",
    "MemoryBackend",
    "S3Backend",
    "Staging",
    "create_backend",
    "is_key",
    "validate_key",
]


def create_backend(settings: Any) -> Backend:
    """The backend the settings name: ``storage_backend`` is ``"local"`` (default) or ``"s3"``.

    Settings are read with defaults so that this works with any settings object::

        storage_backend       "local" | "s3"           default "local"
        storage_dir           Path                     default data_dir / "storage" (S3: the spool only)
        s3_endpoint_url       str | None               default None (AWS)
        s3_bucket             str                      required for s3
        s3_region             str                      default "us-east-1"
        s3_access_key_id      str | None               default None (botocore's chain)
        s3_secret_access_key  str | None               default None
        s3_prefix             str                      default ""
        s3_force_path_style   bool                     default True
    """
    kind = str(getattr(settings, "storage_backend", None) or "local").strip().lower()
    storage_dir = getattr(settings, "storage_dir", None)
    if storage_dir is None:
        storage_dir = Path(getattr(settings, "data_dir", Path(".gatehouse"))) / "storage"
    storage_dir = Path(storage_dir).expanduser()
    if kind == "local":
        return LocalBackend(storage_dir)
    if kind == "s3":
        bucket = getattr(settings, "s3_bucket", None)
        if not bucket:
            raise ConfigError("GATEHOUSE_S3_BUCKET is required when GATEHOUSE_STORAGE_BACKEND is s3")
        try:
            return S3Backend(
                endpoint_url=getattr(settings, "s3_endpoint_url", None) or None,
                bucket=str(bucket),
                region=getattr(settings, "s3_region", None) or "us-east-1",
                access_key_id=getattr(settings, "s3_access_key_id", None) or None,
                secret_access_key=_secret(getattr(settings, "s3_secret_access_key", None)),
                prefix=getattr(settings, "s3_prefix", None) or "",
                force_path_style=bool(getattr(settings, "s3_force_path_style", True)),
                spool_dir=storage_dir / ".spool",
            )
        except ValueError as exc:
            raise ConfigError(f"GATEHOUSE_S3_*: {exc}") from None
    raise ConfigError(f"GATEHOUSE_STORAGE_BACKEND must be local or s3, not {kind!r}")


def _secret(value: Any) -> str | None:
    """A plain string, or pydantic's SecretStr unwrapped."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if callable(getter) else value) or None
