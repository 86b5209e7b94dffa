"""The account page's photo: ``profiles.avatar_url`` names an object in the ``avatars`` bucket.

The value goes into an ``<img src>`` path on this site, and anyone may write it (the REST API,
the sign-up metadata), so it is read as an object name and nothing else: a value that is not a
clean name (``..`` segments, an absolute URL, a scheme such as ``javascript:``, a query or a
fragment, percent-escapes such as an encoded slash) shows no image, and a clean name is
percent-encoded segment by segment, so it can only ever name an object of that bucket.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from gatehouse.core.errors import GatehouseError
from gatehouse.storage import names

BUCKET = "avatars"
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
