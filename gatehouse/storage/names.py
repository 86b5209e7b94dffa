"""Checks on bucket ids and object names: every name is checked before any use.

Object names never become file paths (bytes are stored by version id), but they do become
URLs, listings and RLS inputs, so they are held to Supabase Storage's rules and a bit more.
"""

from __future__ import annotations

import re

from gatehouse.storage.errors import storage_error

BUCKET_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_BYTES = 1024
MAX_SEGMENT_BYTES = 255


#: First path segments under /object/ that name a route, not a bucket: no bucket may take one, so
#: no request for a route (known or not yet built) can reach a bucket's objects.
RESERVED = frozenset({
    "list", "list-v2", "move", "copy", "sign", "upload", "info", "public", "authenticated",
})


def bucket_id(value: str) -> str:
    if value in RESERVED:
        raise storage_error(
            "InvalidBucketName", f"Bucket name invalid: {value!r} is reserved for a route of the Storage API.", 400
        )
    if not BUCKET_ID.match(value):
        raise storage_error(
            "InvalidBucketName",
            f"Bucket name invalid: {value[:80]!r}. Use 1-63 lower-case letters, digits, '.', '_' or '-'.",
            400,
        )
    return value


def object_name(value: str) -> str:
    """A clean object name: relative, no control characters, no '.' or '..' segments, bounded."""
    problem = None
    if not value:
        problem = "the name is empty"
    elif len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = f"the name is longer than {MAX_NAME_BYTES} bytes"
    elif value.startswith("/") or value.endswith("/"):
        problem = "the name must not start or end with '/'"
    elif _CONTROL.search(value):
        problem = "the name contains control characters"
    elif "\\" in value:
        problem = "the name contains a backslash"
    else:
        for segment in value.split("/"):
            if segment in ("", ".", ".."):
                problem = "the name contains an empty, '.' or '..' path segment"
                break
            if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
                problem = f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes"
                break
    if problem is not None:
        raise storage_error("InvalidKey", f"Invalid key: {problem}", 400)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise storage_error("InvalidKey", "Invalid key: the name is not valid UTF-8", 400) from None
    return value
