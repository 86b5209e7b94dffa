"""Domain errors carry a stable code and a message a person can act on; they know no HTTP.

Each service renders them in its own wire shape (``auth.errors``, ...). ``status`` is the HTTP
status the error means; a renderer may still answer differently where a client insists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Scope


class GatehouseError(Exception):
    def __init__(self, code: str, message: str, *, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, status={self.status})"


#: Turns an error into the response of whichever service the request was for.
ErrorRenderer = Callable[[Scope, GatehouseError], Response]

HTTP_CODES = {
    400: "bad_request",
    401: "no_authorization",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "over_request_rate_limit",
    500: "unexpected_failure",
    503: "service_unavailable",
}


def from_status(status: int, message: str) -> GatehouseError:
    """A GatehouseError for a bare HTTP status (routing 404/405 and the like)."""
    return GatehouseError(HTTP_CODES.get(status, "bad_request" if status < 500 else "unexpected_failure"), message, status=status)
