"""AWS Signature Version 4, as S3 checks it: the ``Authorization`` header or a presigned URL.

:func:`parse` reads what the client claims (who, when, where, which headers it signed),
:func:`check_time` refuses a request outside the 15-minute window (or a presigned URL past its
``X-Amz-Expires``), a region other than ours and a service other than ``s3``, and
:func:`expected_signature` recomputes the signature from the request as received (the path as
sent, the query re-encoded and sorted, the signed headers' values) so that :func:`matches`
compares the two in constant time. The payload hash line is the client's declared
``x-amz-content-sha256``; the body is checked against it as it streams (``s3.body``).

Everything here is pure: no I/O, an injectable clock, nothing about who the key belongs to.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from gatehouse.storage.s3.errors import s3_error

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER})
#: How far a request's date may be from ours, either way (S3's RequestTimeTooSkewed).
SKEW = timedelta(minutes=15)
#: The longest a presigned URL may live (7 days, as S3).
MAX_EXPIRES = 604_800
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LONG_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Claimed:
    """What a request says about its signature, before anything is verified."""

    access_key: str
    short_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    long_date: str
    #: The payload hash line: a hex SHA-256, ``UNSIGNED-PAYLOAD`` or a ``STREAMING-...`` mode.
    payload: str
    session_token: str | None
    presigned: bool
    expires: int | None = None

    @property
    def scope(self) -> str:
        return f"{self.short_date}/{self.region}/{self.service}/aws4_request"

    @property
    def moment(self) -> datetime:
        return datetime.strptime(self.long_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _denied(message: str) -> Exception:
    return s3_error("AccessDenied", message, 403)


def _credential(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0] or not re.fullmatch(r"\d{8}", parts[1]):
        raise s3_error("AuthorizationHeaderMalformed", "The Credential is not <key>/<date>/<region>/s3/aws4_request", 400)
    return parts[0], parts[1], parts[2], parts[3]


def _signed_header_list(value: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not value or any(not name or name != name.lower().strip() for name in names) or list(names) != sorted(names):
        raise s3_error("AuthorizationHeaderMalformed", "SignedHeaders must be lower-case names, sorted, joined by ';'", 400)
    return names


def parse(headers: Mapping[str, str], query: Sequence[tuple[str, str]]) -> Claimed:
    """The claimed signature of a request: from ``Authorization``, else from the query string."""
    authorization = headers.get("authorization", "")
    if authorization.startswith(ALGORITHM + " "):
        fields: dict[str, str] = {}
        for item in authorization[len(ALGORITHM) + 1 :].split(","):
            name, _, value = item.strip().partition("=")
            fields[name] = value
        if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
            raise s3_error("AuthorizationHeaderMalformed", "The Authorization header needs Credential, "
                           "SignedHeaders and Signature", 400)
        long_date = headers.get("x-amz-date", "")
        payload = headers.get("x-amz-content-sha256", "")
        if not payload:
            raise s3_error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256", 400)
        return Claimed(*_credential(fields["Credential"]), _signed_header_list(fields["SignedHeaders"]),
                       fields["Signature"], _long_date(long_date), _payload(payload),
                       headers.get("x-amz-security-token") or None, presigned=False)
    if authorization:
        raise s3_error("AccessDenied", "Only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported", 403)
    params: dict[str, str] = {}
    for name, value in query:
        if name.startswith("X-Amz-"):
            if name in params:
                raise s3_error("AuthorizationQueryParametersError", f"{name} is given twice", 400)
            params[name] = value
    if "X-Amz-Signature" not in params and "X-Amz-Credential" not in params:
        raise _denied("The request is not signed: send an AWS Signature Version 4 Authorization header "
                      "or a presigned URL")
    if params.get("X-Amz-Algorithm") != ALGORITHM or not {"X-Amz-Credential", "X-Amz-SignedHeaders",
                                                           "X-Amz-Signature", "X-Amz-Date"} <= params.keys():
        raise s3_error("AuthorizationQueryParametersError", "A presigned URL needs X-Amz-Algorithm=AWS4-HMAC-SHA256, "
                       "X-Amz-Credential, X-Amz-Date, X-Amz-SignedHeaders and X-Amz-Signature", 400)
    expires_text = params.get("X-Amz-Expires", "")
    if not expires_text.isdigit() or not 1 <= int(expires_text) <= MAX_EXPIRES:
        raise s3_error("AuthorizationQueryParametersError",
                       f"X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES}", 400)
    return Claimed(*_credential(params["X-Amz-Credential"]), _signed_header_list(params["X-Amz-SignedHeaders"]),
                   params["X-Amz-Signature"], _long_date(params["X-Amz-Date"]),
                   _payload(params.get("X-Amz-Content-Sha256", UNSIGNED)),
                   params.get("X-Amz-Security-Token") or None, presigned=True, expires=int(expires_text))


def _long_date(value: str) -> str:
    if not _LONG_DATE.match(value):
        raise _denied("The request needs an X-Amz-Date of the form YYYYMMDDTHHMMSSZ")
    try:
        datetime.strptime(value, "%Y%m%dT%H%M%SZ")
    except ValueError:
        raise _denied("X-Amz-Date is not a real date") from None
    return value


def _payload(value: str) -> str:
    if value in (UNSIGNED, *STREAMING) or _HEX64.match(value):
        return value
    raise s3_error("InvalidArgument", "x-amz-content-sha256 must be a SHA-256 in hex, UNSIGNED-PAYLOAD "
                   "or a STREAMING- mode", 400)


def check_time(claimed: Claimed, *, region: str, now: datetime) -> None:
    """Refuse a request signed for another region or service, or outside its time window."""
    if claimed.service != "s3":
        raise s3_error("AuthorizationHeaderMalformed", f"The credential names the service {claimed.service!r}; "
                       "this endpoint is 's3'", 400)
    if not hmac.compare_digest(claimed.region.encode(), region.encode()):
        raise s3_error("AuthorizationHeaderMalformed", f"The authorization header is malformed; the region "
                       f"{claimed.region[:64]!r} is wrong; expecting {region!r}", 400, region=region)
    if claimed.long_date[:8] != claimed.short_date:
        raise s3_error("SignatureDoesNotMatch", "The credential's date is not the date of X-Amz-Date", 403)
    moment = claimed.moment
    if claimed.presigned:
        assert claimed.expires is not None
        if moment - now > SKEW:
            raise s3_error("AccessDenied", "Request is not valid yet", 403)
        if now > moment + timedelta(seconds=claimed.expires):
            raise s3_error("AccessDenied", "Request has expired", 403)
    elif abs(now - moment) > SKEW:
        raise s3_error("RequestTimeTooSkewed",
                       "The difference between the request time and the server's time is too large.", 403)


def canonical_query(raw_query: bytes) -> str:
    """The query string as SigV4 signs it: each name and value decoded then RFC 3986-encoded,
    sorted; a presigned URL's own ``X-Amz-Signature`` left out."""
    pairs: list[tuple[str, str]] = []
    for item in raw_query.decode("latin-1").split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        name, value = unquote(name, errors="strict"), unquote(value, errors="strict")
        if name == "X-Amz-Signature":
            continue
        pairs.append((quote(name, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_request(
    claimed: Claimed, method: str, raw_path: bytes, raw_query: bytes, headers: Mapping[str, list[str]],
) -> str:
    """The canonical request of SigV4, from the request exactly as it arrived.

    ``headers`` maps each lower-case name to its values (repeated headers are joined by commas).
    Every signed header must be present; ``host`` must be signed, and so must every ``x-amz-*``
    header the request carries (unsigned, a proxy could add or change them).
    """
    if "host" not in claimed.signed_headers:
        raise s3_error("AccessDenied", "SignedHeaders must include host", 403)
    for name in headers:
        if name.startswith("x-amz-") and name not in claimed.signed_headers and not claimed.presigned:
            raise s3_error("AccessDenied", f"There were headers present in the request which were not signed: {name}", 403)
    lines = []
    for name in claimed.signed_headers:
        values = headers.get(name)
        if values is None:
            raise s3_error("AccessDenied", f"The signed header {name} is not in the request", 403)
        lines.append(f"{name}:{','.join(_SPACES.sub(' ', value.strip()) for value in values)}\n")
    path = raw_path.decode("latin-1") or "/"
    return "\n".join([
        method, path, canonical_query(raw_query), "".join(lines), ";".join(claimed.signed_headers), claimed.payload,
    ])


def signing_key(secret: str, claimed: Claimed) -> bytes:
    key = hmac.new(("AWS4" + secret).encode(), claimed.short_date.encode(), hashlib.sha256).digest()
    for part in (claimed.region, claimed.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def expected_signature(key: bytes, claimed: Claimed, canonical: str) -> str:
    to_sign = "\n".join([ALGORITHM, claimed.long_date, claimed.scope, hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def matches(given: str, expected: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(given.encode("latin-1", "replace"), expected.encode())


def chunk_signature(key: bytes, claimed: Claimed, previous: str, chunk_sha256: str) -> str:
    """The signature of one chunk of a ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` body."""
    to_sign = f"AWS4-HMAC-SHA256-PAYLOAD\n{claimed.long_date}\n{claimed.scope}\n{previous}\n{EMPTY_SHA256}\n{chunk_sha256}"
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def trailer_signature(key: bytes, claimed: Claimed, previous: str, trailer: bytes) -> str:
    """The signature of the trailing headers of a ``...-PAYLOAD-TRAILER`` body."""
    to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", claimed.long_date, claimed.scope, previous,
                         hashlib.sha256(trailer).hexdigest()])
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
