"""S3's error shape, ``<Error><Code/><Message/><Resource/><RequestId/></Error>``, with S3's statuses.

The S3 routes raise :func:`s3_error` with S3's own codes; the storage services they call raise
storage's codes (``storage.errors``), and the edge raises core's. :func:`render_s3_error` is the
one table that names all of them as S3 does, so an S3 client parses every refusal (botocore
reads ``Code``; a HEAD answer carries the status alone).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from xml.sax.saxutils import escape

from starlette.responses import Response
from starlette.types import Scope

from gatehouse.core.caller import Unauthenticated
from gatehouse.core.db import SessionEnded
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import InvalidBody, TooLarge, state

_log = logging.getLogger("gatehouse.storage.s3")
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def text(value: object) -> str:
    """A value as XML character data: escaped, and without characters XML 1.0 cannot carry."""
    return escape(_NOT_XML.sub("", str(value)))


class S3Error(GatehouseError):
    """An S3 error code with its status; ``extra`` values become elements beside ``Message``."""


def s3_error(code: str, message: str, status: int, **extra: Any) -> S3Error:
    return S3Error(code, message, status=status, **extra)


#: Storage's and core's codes as S3 names them: (code, status); None keeps the error's own status.
_CODES: dict[str, tuple[str, int | None]] = {
    "InvalidJWT": ("AccessDenied", 403),
    "ExpiredToken": ("AccessDenied", 403),
    "InvalidSignature": ("SignatureDoesNotMatch", 403),
    "forbidden_secret_key": ("AccessDenied", 403),
    "EntityTooLarge": ("EntityTooLarge", 400),
    "request_too_large": ("EntityTooLarge", 400),
    "InvalidMimeType": ("InvalidRequest", 400),
    "InvalidKey": ("InvalidArgument", 400),
    "InvalidRequest": ("InvalidRequest", 400),
    "bad_request": ("InvalidRequest", 400),
    "KeyAlreadyExists": ("KeyAlreadyExists", 409),
    "BucketAlreadyExists": ("BucketAlreadyOwnedByYou", 409),
    "BucketChanged": ("OperationAborted", 409),
    "BucketNotEmpty": ("BucketNotEmpty", 409),
    "InvalidImage": ("InvalidRequest", 400),
    "InvalidRange": ("InvalidRange", 416),
    "StorageBackendError": ("ServiceUnavailable", 503),
    "database_unavailable": ("ServiceUnavailable", 503),
    "SlowDown": ("SlowDown", 503),
    "DatabaseError": ("InternalError", 500),
    "unexpected_failure": ("InternalError", 500),
    "not_found": ("NoSuchKey", 404),
    "method_not_allowed": ("MethodNotAllowed", 405),
}


def as_s3(error: GatehouseError) -> tuple[str, str, int]:
    """(code, message, status) of any error raised while serving an S3 request."""
    if isinstance(error, S3Error):
        return error.code, error.message, error.status
    if isinstance(error, SessionEnded):
        return "AccessDenied", f"The session token's session has ended: {error.message}", 403
    if isinstance(error, Unauthenticated):
        return "AccessDenied", error.message, 403
    if isinstance(error, TooLarge):
        return "EntityTooLarge", f"Your proposed upload exceeds the maximum allowed size of {error.limit} bytes", 400
    if isinstance(error, InvalidBody):
        return "MalformedXML", error.message, 400
    code, status = _CODES.get(error.code, (error.code, None))
    status = status or error.status
    if status >= 500 and status != 503:
        _log.error("S3 request failed: %s %s", error.code, error.message)
    return code, error.message, status


def render_s3_error(scope: Scope, error: GatehouseError) -> Response:
    code, message, status = as_s3(error)
    request_id = str(state(scope).get("request_id", ""))
    headers = {"x-amz-request-id": request_id}
    if scope.get("method") in ("PUT", "POST"):
        # The body may be unread (refused before it was needed, perhaps without the client's awaited
        # 100 Continue): closing keeps its bytes from being read as the next request on the connection.
        headers["Connection"] = "close"
    if "retry_after" in error.extra:
        headers["Retry-After"] = str(error.extra["retry_after"])
    if scope.get("method") == "HEAD":
        return Response(status_code=status, headers=headers)
    extra = "".join(
        f"<{name[:1].upper()}{name[1:]}>{text(value)}</{name[:1].upper()}{name[1:]}>"
        for name, value in error.extra.items() if isinstance(error, S3Error)
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{text(code)}</Code><Message>{text(message)}</Message>{extra}"
        f"<Resource>{text(scope.get('path', ''))}</Resource><RequestId>{text(request_id)}</RequestId></Error>"
    )
    return Response(body, status_code=status, headers=headers, media_type="application/xml")
