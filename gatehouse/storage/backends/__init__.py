"""Where object bytes live: an interface (``base``), the local folder, S3, and the in-memory fake."""

from __future__ import annotations

from gatehouse.storage.backends.base import (
    CHUNK_SIZE,
    Backend,
    BackendError,
    BlobNotFound,
    BlobStream,
    InvalidRange,
    create_backend,
    validate_key,
)
from gatehouse.storage.backends.local import LocalBackend
from gatehouse.storage.backends.memory import MemoryBackend
from gatehouse.storage.backends.s3 import S3Backend

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
    "create_backend",
    "validate_key",
]
