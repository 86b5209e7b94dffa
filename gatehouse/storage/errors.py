"""Supabase Storage's error shape: ``{"statusCode": "404", "code": ..., "error": ..., "message": ...}``.

Storage answers client errors with HTTP 400 and puts the real status in ``statusCode`` as a
string; the clients branch on that (storage3's ``exists()`` looks for ``"404"``). Server errors
keep their HTTP status, and so does 401: on Supabase a refused API key (a secret key sent by a
browser) is answered before storage, with a real 401, and the same rule answers it here.

:func:`translate` is storage's one table from a database error to a storage error.
"""

from __future__ import annotations

import logging

import asyncpg
from starlette.responses import Response
from starlette.types import Scope

from gatehouse.core.caller import Unauthenticated
from gatehouse.core.db import SessionEnded, is_unavailable, unavailable
from gatehouse.core.errors import GatehouseError
from gatehouse.core.http import InvalidBody, JSONResponse, TooLarge
from gatehouse.core.sqlstate import Fault, fault

_log = logging.getLogger("gatehouse.storage")

#: The legacy ``error`` word storage puts beside each code.
_LEGACY = {
    "NoSuchKey": "not_found",
    "NoSuchBucket": "Bucket not found",
    "KeyAlreadyExists": "Duplicate",
    "BucketAlreadyExists": "Duplicate",
    "AccessDenied": "Unauthorized",
    "EntityTooLarge": "Payload too large",
    "InvalidMimeType": "invalid_mime_type",
    "InvalidKey": "Invalid Input",
    "InvalidBucketName": "Invalid Input",
    "InvalidRequest": "Invalid Input",
    "InvalidJWT": "Unauthorized",
    "ExpiredToken": "Unauthorized",
    "InvalidSignature": "Unauthorized",
    "InvalidRange": "Invalid Range",
    "BucketNotEmpty": "InvalidRequest",
    "InvalidImage": "Invalid Input",
    "StorageBackendError": "internal",
    "SlowDown": "Too Many Requests",
    "forbidden_secret_key": "Unauthorized",
}


def storage_error(code: str, message: str, status: int) -> GatehouseError:
    return GatehouseError(code, message, status=status)


def not_found() -> GatehouseError:
    return storage_error("NoSuchKey", "Object not found", 404)


def bucket_not_found() -> GatehouseError:
    return storage_error("NoSuchBucket", "Bucket not found", 404)


def access_denied(message: str = "new row violates row-level security policy") -> GatehouseError:
    return storage_error("AccessDenied", message, 403)


def invalid(message: str) -> GatehouseError:
    return storage_error("InvalidRequest", message, 400)


def bucket_changed() -> GatehouseError:
    return storage_error("BucketChanged", "the bucket's settings changed during the request; try again", 409)


def bad_type(mimetype: str) -> GatehouseError:
    return storage_error("InvalidMimeType", f"mime type {mimetype} is not supported", 415)


def translate(error: asyncpg.PostgresError) -> GatehouseError:
    """A database error as storage names it, by core's one SQLSTATE classification."""
    if is_unavailable(error):
        return unavailable()
    kind = fault(error.sqlstate)
    if kind in (Fault.BAD_INPUT, Fault.CHECK):
        return invalid(f"Invalid input: {error.message}")
    if kind is Fault.CONFLICT:
        return storage_error("KeyAlreadyExists", "The resource already exists", 409)
    if kind is Fault.FORBIDDEN:
        return access_denied(error.message)
    if kind is Fault.MISSING_REFERENCE:
        return bucket_not_found()
    _log.error("storage request failed in the database", exc_info=error)
    return storage_error("DatabaseError", "the database refused the request; the server log has the details", 500)


def render_storage_error(scope: Scope, error: GatehouseError) -> Response:
    error = _storage_shaped(error)
    status = error.status
    http_status = status if status >= 500 or status in (304, 401) else 400
    if error.extra.get("http_status"):
        http_status = int(error.extra["http_status"])
    body = {
        "statusCode": str(status),
        "code": error.code,
        "error": _LEGACY.get(error.code, error.code),
        "message": error.message,
    }
    headers = {"Retry-After": str(error.extra["retry_after"])} if "retry_after" in error.extra else None
    return JSONResponse(body, status_code=http_status, headers=headers)


def _storage_shaped(error: GatehouseError) -> GatehouseError:
    """The edge's and core's own errors, as storage names them."""
    if isinstance(error, SessionEnded):
        return storage_error("InvalidJWT", error.message, 403)  # what storage answers for a token it refuses
    if isinstance(error, Unauthenticated):
        if error.reason == "secret_key_in_browser":
            return storage_error("forbidden_secret_key", error.message, 401)
        if error.reason == "invalid_api_key":
            return storage_error("InvalidJWT", "Invalid API key", 403)
        if error.reason == "no_token":
            return access_denied("Authorization is required: send an access token or an API key")
        return storage_error("InvalidJWT", f"invalid JWT: {error.detail}", 403)
    if isinstance(error, InvalidBody):
        return invalid(error.message)
    if isinstance(error, TooLarge):
        return storage_error("EntityTooLarge", f"The object exceeded the maximum allowed size of {error.limit} bytes", 413)
    return error
