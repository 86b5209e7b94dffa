"""The account page's photo: ``profiles.avatar_url`` names an object in the ``avatars`` bucket.

``replace`` stores a new photo through the storage service and points the profile at it
(``gatehouse.profiles``), both as the signed-in user, so the bucket's and the table's policies
decide; a photo the page turns away raises ``AvatarRefused`` with the message to show.

The value goes into an ``<img src>`` path on this site, and anyone may write it (the REST API,
the sign-up metadata), so it is read as an object name and nothing else: a value that is not a
clean name (``..`` segments, an absolute URL, a scheme such as ``javascript:``, a query or a
fragment, percent-escapes such as an encoded slash) shows no image, and a clean name is
percent-encoded segment by segment, so it can only ever name an object of that bucket.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from starlette.datastructures import UploadFile

from gatehouse import profiles
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.storage import names

BUCKET = "avatars"
#: The image types a photo may have, with the extension its object name gets.
TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
#: The photo's width and height on the account page, in pixels.
SIZE = 160
#: What the page says when storage refuses the upload, by HTTP status.
_STORAGE_REFUSALS = {
    413: "That image is larger than 2 MB. Pick a smaller one.",
    415: "That file is not a PNG, JPEG, GIF or WebP image.",
}
#: A URL scheme at the start (``https:``, ``javascript:``, ``data:``): a link, not an object name.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: Characters that would end a URL's path (``?``, ``#``) or say it is already encoded (``%``).
_URL_SYNTAX = re.compile(r"[?#%]")


def object_name(value: object) -> str | None:
    """``value`` if it is an object name fit for the avatars bucket, else None."""
    if not isinstance(value, str) or not value:
        return None
    if _SCHEME.match(value) or _URL_SYNTAX.search(value):
        return None
    try:
        return names.object_name(value)
    except GatehouseError:
        return None


def image_src(value: object, size: int, *, origin: str = "") -> str | None:
    """The URL that shows the avatar at ``size`` pixels, or None for no image.

    Same-site unless ``origin`` names the storage origin (``GATEHOUSE_STORAGE_PUBLIC_URL``).
    """
    name = object_name(value)
    if name is None:
        return None
    path = "/".join(quote(segment, safe="") for segment in name.split("/"))
    query = urlencode({"width": size, "height": size, "resize": "cover"})
    return f"{origin}/storage/v1/render/image/public/{BUCKET}/{path}?{query}"


class Uploader(Protocol):
    """What ``replace`` needs of storage's objects: an upload as the caller."""

    async def upload(
        self, claims: dict[str, Any], bucket_id: str, name: str, stream: AsyncIterator[bytes], *,
        content_type: str | None, content_length: int | None, headers: dict[str, str], upsert: bool,
    ) -> object: ...


class AvatarRefused(GatehouseError):
    """A photo the account page turns away; the message is what the page shows."""

    def __init__(self, message: str) -> None:
        super().__init__("avatar_refused", message)


async def replace(
    storage: Uploader, database: Database, claims: Mapping[str, Any], user_id: uuid.UUID, upload: object
) -> str:
    """Store ``upload`` (the form's file field) as a new object and make it the profile's photo.

    Returns the object's name. Each photo gets a new name, so browsers never show a cached old one.
    """
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise AvatarRefused("Choose an image to upload.")
    extension = TYPES.get((upload.content_type or "").lower())
    if extension is None:
        raise AvatarRefused("Upload a PNG, JPEG, GIF or WebP image.")
    name = object_name(f"{user_id}-{secrets.token_hex(6)}.{extension}")
    if name is None:  # the user id is a UUID: this never happens, but nothing unchecked is saved
        raise AvatarRefused("That photo cannot be saved; sign in again.")
    try:
        await storage.upload(
            dict(claims), BUCKET, name, _chunks(upload), content_type=upload.content_type,
            content_length=upload.size, headers={"cache-control": "max-age=3600"}, upsert=False,
        )
    except GatehouseError as error:
        raise AvatarRefused(_STORAGE_REFUSALS.get(error.status, error.message)) from error
    await profiles.save_avatar(database, claims, user_id, name)
    return name


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(65536):
        yield chunk
