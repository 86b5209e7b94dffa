"""The S3 backend's error boundary: botocore's and aiohttp's exceptions become ours.

As httpx's ``map_httpcore_exceptions`` does for its transports: inside ``translated`` a missing
key becomes ``BlobNotFound``, an unsatisfiable range ``InvalidRange``, and every other failure a
``BackendError`` whose message names the endpoint and the bucket, never a credential; the
original exception stays the cause, for the log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.backends.base import BackendError, BlobNotFound, InvalidRange

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_DENIED = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "AuthorizationHeaderMalformed", "InvalidSecurity", "403",
}


def no_bucket(bucket: str, where: str) -> BackendError:
    return BackendError(
        f"the S3 bucket {bucket!r} does not exist at {where}; "
        "create it (Gatehouse never creates buckets) or set GATEHOUSE_S3_BUCKET"
    )


@contextlib.contextmanager
def translated(bucket: str, where: str, action: str, key: str | None = None) -> Iterator[None]:
    """Turn botocore/aiohttp failures into our errors. ``key``: a 404 means BlobNotFound(key)."""
    try:
        yield
    except GatehouseError:
        raise
    except ClientError as exc:
        raise client_error(exc, bucket, where, action, key) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise BackendError(
            f"no usable S3 credentials to {action}: set GATEHOUSE_S3_ACCESS_KEY_ID and GATEHOUSE_S3_SECRET_ACCESS_KEY"
        ) from exc
    except (BotoConnectionError, ConnectionClosedError, aiohttp.ClientConnectionError) as exc:
        raise BackendError(f"cannot reach S3 at {where} to {action} ({type(exc).__name__})") from exc
    except (ReadTimeoutError, TimeoutError) as exc:
        raise BackendError(f"S3 at {where} did not answer in time to {action}") from exc
    except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
        raise BackendError(f"S3 at {where} failed to {action} ({type(exc).__name__})") from exc


def client_error(exc: ClientError, bucket: str, where: str, action: str, key: str | None) -> GatehouseError:
    """The error an S3 error answer means, by its code and HTTP status."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if key is not None and code in _NOT_FOUND:
        return BlobNotFound(key)
    if code == "NoSuchBucket":
        return no_bucket(bucket, where)
    if code == "InvalidRange" or status == 416:
        size = error.get("ActualObjectSize")
        return InvalidRange(int(size) if str(size).isdigit() else None)
    if code in _DENIED or status == 403:
        return BackendError(
            f"S3 at {where} refused to {action} in the bucket {bucket!r} ({code or status}); "
            "check the access key, the secret and the key's permissions"
        )
    if code in ("SlowDown", "ServiceUnavailable", "503") or status == 503:
        return BackendError(f"S3 at {where} is overloaded or unavailable ({code or status}); retry later")
    return BackendError(f"S3 at {where} failed to {action}: {code or 'error'} (HTTP {status})")
