"""The one shape of a storage key: ``"<bucket_id>/<version uuid>"``.

The storage service names each stored version so, and nothing else reaches a backend: no object
name a user chose ever becomes a path or an S3 object name. Every backend checks each key here
(the local backend checks the resolved path again); a key that fails is a bug upstream, hence
``ValueError`` and not a domain error.
"""

from __future__ import annotations

import re

_BUCKET = r"[a-z0-9][a-z0-9._-]{0,62}"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KEY = re.compile(rf"({_BUCKET})/({_UUID})")
_PREFIX = re.compile(rf"{_BUCKET}(/[0-9a-f-]{{0,36}})?")


def validate_key(key: str) -> str:
    """Return ``key`` if it is exactly ``"<bucket_id>/<version uuid>"``; raise ValueError otherwise.

    The uuid is the canonical lowercase form (``str(uuid.uuid4())``). As in supabase/storage's
    secure-path.ts the obvious escapes (NUL, absolute paths, ``..``) are named first; the strict
    pattern then refuses everything else, so a key is always two safe path components.
    """
    if not isinstance(key, str):
        raise TypeError(f"a storage key must be a string, not {type(key).__name__}")
    if "\0" in key:
        raise ValueError("a storage key must not contain NUL")
    if key.startswith(("/", "\\")):
        raise ValueError(f"a storage key must be relative: {key[:80]!r}")
    if ".." in key.replace("\\", "/").split("/"):
        raise ValueError(f"a storage key must not contain '..': {key[:80]!r}")
    if _KEY.fullmatch(key) is None:
        raise ValueError(f"a storage key must be '<bucket_id>/<version uuid>': {key[:80]!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A ``keys()`` filter: empty, or the start of a valid key (``"avatars/"``, ``"avatars/1f"``)."""
    if prefix == "":
        return prefix
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise ValueError(f"a key prefix must be empty or start like '<bucket_id>/': {str(prefix)[:80]!r}")
    return prefix


def split_key(key: str) -> tuple[str, str]:
    """``(bucket_id, version)`` of a valid key."""
    match = _KEY.fullmatch(validate_key(key))
    assert match is not None
    return match.group(1), match.group(2)


def is_key(name: str) -> bool:
    """True if ``name`` is a valid key (for listings and archives that may hold anything else)."""
    return _KEY.fullmatch(name) is not None

