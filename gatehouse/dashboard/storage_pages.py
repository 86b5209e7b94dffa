"""What the dashboard's storage pages share: the storage service and the claims they call it
with, the checks on folder and object names taken from forms and links, the audit rows, and the
refusal of a storage error shown on a page.

The dashboard's administrators see every bucket, as Supabase Studio's do: the pages call the
storage service's own functions (those ``/storage/v1`` calls) as ``service_role``. Row-level
security is bypassed as it is for the secret key, but the buckets' rules (size limit, allowed
types, the checks on names and bytes) are the service's, so they hold for the dashboard too.
Nothing the browser gets carries a key or a service-role token: bytes reach it either rendered
by the dashboard (thumbnails) or through a short-lived signed URL (downloads).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard import audit
from gatehouse.dashboard.pages import Visit, client_ip, dashboard
from gatehouse.services import services
from gatehouse.storage import names
from gatehouse.storage.service import StorageService

#: How long a download link made for an administrator works, in seconds.
DOWNLOAD_SECONDS = 60
#: Longest list of allowed types a bucket form may send, in characters, and most types in it.
MAX_TYPES_TEXT, MAX_TYPES = 4096, 100
_MIME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/(\*|[a-z0-9][a-z0-9!#$&^_.+-]{0,126})$", re.IGNORECASE)


def admin_claims() -> dict[str, Any]:
    """The claims the pages call storage with: the service role, as the secret key gets."""
    return {"role": "service_role"}


def storage(request: Request) -> StorageService:
    return services(request).storage


def bad(message: str, status: int = 400) -> GatehouseError:
    return GatehouseError("validation_failed", message, status=status)


def page_status(error: GatehouseError) -> int:
    """The 4xx a refused change is shown with; the server's own faults are raised on."""
    if error.status >= 500:
        raise error
    return error.status if 400 <= error.status < 500 else 400


def folder(value: str) -> str:
    """A folder to browse or upload into: "" (the bucket's top) or a clean relative path ending in
    "/". Absolute paths, "..", ".", empty segments, NUL and control characters are refused (400)."""
    if value == "":
        return ""
    body = value.removesuffix("/")
    names.object_name(body)
    return body + "/"


def object_name(value: str) -> str:
    """An object's full name from a form or link, held to storage's rules (400 ``InvalidKey``)."""
    return names.object_name(value)


def bucket_id(request: Request) -> str:
    """The bucket of the path, held to storage's rules (400 ``InvalidBucketName``)."""
    return names.bucket_id(request.path_params["bucket"])


def crumbs(prefix: str) -> list[tuple[str, str]]:
    """The folders above and at ``prefix``: (label, prefix) from the top down."""
    found, path = [], ""
    for part in prefix.split("/")[:-1]:
        path += part + "/"
        found.append((part, path))
    return found


def parent(name: str) -> str:
    """The folder an object name sits in ("" at the top)."""
    return name.rsplit("/", 1)[0] + "/" if "/" in name else ""


def mime_types(text: str) -> list[str] | None:
    """Allowed types from a form (separated by commas, spaces or new lines); None: any type."""
    if len(text) > MAX_TYPES_TEXT:
        raise bad(f"The allowed types are longer than {MAX_TYPES_TEXT} characters.")
    found = [item for item in re.split(r"[\s,]+", text) if item]
    if len(found) > MAX_TYPES:
        raise bad(f"Give at most {MAX_TYPES} allowed types.")
    for item in found:
        if not _MIME_PATTERN.match(item):
            raise bad(f"{item[:80]!r} is not a MIME type such as image/png or image/*.")
    return found or None


def settings_body(data: dict[str, str]) -> dict[str, Any]:
    """A bucket form as the storage API's bucket body (``forms.NewBucket`` / ``BucketChanges``)."""
    limit = data.get("file_size_limit", "").strip()
    if len(limit) > 32:
        raise bad("The size limit is longer than 32 characters.")
    return {
        "public": data.get("public") == "yes", "file_size_limit": limit or None,
        "allowed_mime_types": mime_types(data.get("allowed_mime_types", "")),
        "inline_documents": data.get("inline_documents") == "yes",
    }


async def record(request: Request, current: Visit, action: str, target: str, detail: dict[str, Any]) -> None:
    """One audit row for a storage change: names and settings, never an object's bytes."""
    assert current.session is not None
    await audit.record(dashboard(request).accounts.pool, current.session.admin.id, action, ip=client_ip(request),
                       target=target, detail=detail)
