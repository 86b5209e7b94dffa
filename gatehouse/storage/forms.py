"""The request bodies of storage's JSON routes, parsed into small validated forms.

The handlers parse a body here (after ``api._json`` has read it) and pass the form to a
service, which takes only checked values. A form refuses a bad body with 400 ``InvalidRequest``
naming the field, in the order the fields are listed, so the first problem is the one reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatehouse.storage import names
from gatehouse.storage.errors import invalid
from gatehouse.storage.images import Transform

#: Columns the first list (``POST /object/list/{bucket}``) may sort by.
SORT_COLUMNS = {"name", "updated_at", "created_at", "last_accessed_at"}
#: Most names one remove or one batch of signed URLs may name.
MAX_NAMES = 1000

_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


@dataclass(frozen=True)
class NewBucket:
    """``POST /bucket``."""

    id: str
    name: str
    public: bool
    file_size_limit: int | None
    allowed_mime_types: list[str] | None
    inline_documents: bool

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> NewBucket:
        bucket_id = names.bucket_id(str(body.get("id") or body.get("name") or ""))
        return cls(
            bucket_id, str(body.get("name") or bucket_id), _bool(body.get("public", False), "public"),
            size_limit(body.get("file_size_limit")), _mime_list(body.get("allowed_mime_types")),
            _bool(body.get("inline_documents", False), "inline_documents"),
        )


@dataclass(frozen=True)
class BucketChanges:
    """``PUT /bucket/{id}``: None leaves a flag as it is; a limit or type list is set (even to
    null, which lifts it) only when the body names it."""

    public: bool | None
    file_size_limit: int | None
    allowed_mime_types: list[str] | None
    inline_documents: bool | None
    sets_size_limit: bool
    sets_mime_types: bool

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> BucketChanges:
        public, inline = body.get("public"), body.get("inline_documents")
        if public is not None and not isinstance(public, bool):
            raise invalid("public must be true or false")
        if inline is not None and not isinstance(inline, bool):
            raise invalid("inline_documents must be true or false")
        return cls(
            public, size_limit(body.get("file_size_limit")), _mime_list(body.get("allowed_mime_types")), inline,
            "file_size_limit" in body, "allowed_mime_types" in body,
        )


@dataclass(frozen=True)
class ListOptions:
    """``POST /object/list/{bucket}``: the files and folders directly under a folder."""

    prefix: str
    limit: int
    offset: int
    search: str
    column: str
    descending: bool

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> ListOptions:
        prefix = body.get("prefix", "")
        if not isinstance(prefix, str):
            raise invalid("prefix must be a string")
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        limit = _int_option(body, "limit", 100, 1, 1000)
        offset = _int_option(body, "offset", 0, 0, 10**9)
        search = body.get("search") or ""
        if not isinstance(search, str):
            raise invalid("search must be a string")
        sort = body.get("sortBy") or {}
        column = sort.get("column", "name") if isinstance(sort, dict) else "name"
        order = sort.get("order", "asc") if isinstance(sort, dict) else "asc"
        order = order.lower() if isinstance(order, str) else order
        if not isinstance(column, str) or column not in SORT_COLUMNS or order not in ("asc", "desc"):
            raise invalid("sortBy.column must be name, updated_at, created_at or last_accessed_at; order asc or desc")
        return cls(prefix, limit, offset, search, column, order == "desc")


@dataclass(frozen=True)
class Transfer:
    """``POST /object/move`` and ``/object/copy``: a source and a target, in the same bucket
    unless ``destinationBucket`` names another."""

    bucket_id: str
    source: str
    target_bucket: str
    target: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Transfer:
        bucket_id, source, target = body.get("bucketId"), body.get("sourceKey"), body.get("destinationKey")
        if not (isinstance(bucket_id, str) and bucket_id and isinstance(source, str) and source
                and isinstance(target, str) and target):
            raise invalid("bucketId, sourceKey and destinationKey are required strings")
        target_bucket = body.get("destinationBucket") or bucket_id
        if not isinstance(target_bucket, str):
            raise invalid("destinationBucket must be a string")
        return cls(bucket_id, source, target_bucket, target)


def name_list(body: Mapping[str, Any], field: str) -> list[str]:
    """``prefixes`` of a remove, ``paths`` of a batch of signed URLs: at most :data:`MAX_NAMES` names."""
    value = body.get(field)
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value) or len(value) > MAX_NAMES:
        raise invalid(f"{field} must be a list of at most {MAX_NAMES} object names")
    return value


def expires_in(body: Mapping[str, Any], longest: int) -> int:
    """A signed URL's ``expiresIn``: whole seconds, 1 to ``longest``."""
    value: Any = body.get("expiresIn")
    try:
        seconds = int(value)  # supabase-py sends it as a string
    except (TypeError, ValueError):
        raise invalid("expiresIn must be a number of seconds") from None
    if not 1 <= seconds <= longest:
        raise invalid(f"expiresIn must be between 1 and {longest} seconds, got {seconds}")
    return seconds


def signed_transform(value: Any) -> dict[str, str] | None:
    """The transformation a signed URL fixes (``transform``, as the clients send it), checked as a
    render would check it; None if there is none."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(item, int | str) and not isinstance(item, bool) for item in value.values()
    ):
        raise invalid("transform must be an object of width, height, resize, quality and format")
    params = {key: str(item) for key, item in value.items() if key in ("width", "height", "resize", "quality", "format")}
    Transform.parse(params)
    return params or None


def size_limit(value: Any) -> int | None:
    """``file_size_limit``: bytes as a number, or a string such as "2MB" (as storage-js allows)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number):] or "b"
        if number.replace(".", "", 1).isdigit() and unit in _UNITS and 0 < float(number) * _UNITS[unit] < 2**63:
            return int(float(number) * _UNITS[unit])
    raise invalid(f"file_size_limit {value!r} is not a size (bytes, or a string like '2MB')")


def _mime_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and "/" in item for item in value):
        raise invalid("allowed_mime_types must be a list of MIME types like image/png or image/*")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false")
    return value


def _int_option(options: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{name} must be an integer from {low} to {high}")
    return value
