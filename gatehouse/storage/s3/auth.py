"""Who an S3 request comes from: its SigV4 signature, checked against one of two kinds of secret.

* An S3 access key (``gatehouse s3-keys create``): the request acts as ``service_role``, as
  Supabase Storage's S3 keys do (RLS bypassed; for servers only).
* A session token (``X-Amz-Security-Token``, as Supabase documents it: access key id = the
  project ref, any value here; secret = the anon key, legacy JWT or publishable key): the token is
  a user's access token, verified by the one verifier (``core.caller``), and the request runs
  with that user's claims, so RLS on ``storage.objects`` decides as for the JSON API. An
  expired or forged token is refused with 403.

The signature is checked first (region, time window, then the HMAC in constant time); a
session token only after its signature holds, and its session must still be alive (signed out,
banned or deleted: 403), as for every request with a user's token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from gatehouse.core.caller import Unauthenticated
from gatehouse.services import services
from gatehouse.storage.s3 import sigv4
from gatehouse.storage.s3.errors import s3_error
from gatehouse.storage.s3.keys import S3Keys

SERVICE_CLAIMS = {"role": "service_role"}


@dataclass(frozen=True)
class S3Caller:
    claims: dict[str, Any]
    #: Who may continue a multipart upload this caller starts: the service, a user or a role.
    principal: str
    claimed: sigv4.Claimed
    #: The SigV4 signing key (for chunk signatures of a streamed body).
    key: bytes

    @property
    def is_service(self) -> bool:
        return self.claims.get("role") == "service_role"


def _now() -> datetime:
    return datetime.now(UTC)


def s3_keys(request: Request) -> S3Keys:
    """The app's sealer of S3 secrets, made once (its key is derived from the signing key)."""
    found: S3Keys | None = getattr(request.app.state, "s3_keys", None)
    if found is None:
        found = S3Keys(services(request).keys)
        request.app.state.s3_keys = found
    return found


def _headers(request: Request) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in request.headers.raw:
        grouped.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return grouped


async def authenticate(request: Request, *, now: Callable[[], datetime] = _now) -> S3Caller:
    container = services(request)
    raw_query: bytes = request.scope.get("query_string", b"")
    try:
        claimed = sigv4.parse(request.headers, request.query_params.multi_items())
        canonical = sigv4.canonical_request(
            claimed, request.method, request.scope.get("raw_path") or request.scope["path"].encode(), raw_query,
            _headers(request),
        )
    except UnicodeDecodeError:
        raise s3_error("AuthorizationQueryParametersError", "The query string is not valid UTF-8 once decoded", 400) from None
    sigv4.check_time(claimed, region=container.settings.storage_s3_region, now=now())
    if claimed.session_token is not None:
        keys = container.keys
        secrets = [keys.anon_key, keys.publishable_key]
    else:
        secret = await s3_keys(request).secret(container.database.admin, claimed.access_key)
        if secret is None:
            raise s3_error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.", 403)
        secrets = [secret]
    matched: bytes | None = None
    for secret in secrets:  # every candidate is computed: the time taken does not say which matched
        key = sigv4.signing_key(secret, claimed)
        if sigv4.matches(claimed.signature, sigv4.expected_signature(key, claimed, canonical)):
            matched = key
    if matched is None:
        hint = " With a session token, the secret is the anon key." if claimed.session_token else ""
        raise s3_error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                       "you provided. Check your key and signing method." + hint, 403)
    if claimed.session_token is None:
        return S3Caller(dict(SERVICE_CLAIMS), "service", claimed, matched)
    try:
        found = container.callers.token(claimed.session_token)
    except Unauthenticated as refusal:
        code = "ExpiredToken" if refusal.reason == "expired_token" else "InvalidToken"
        raise s3_error(code, f"The session token is not valid: {refusal.detail}", 403) from None
    claims = found.db_claims()
    await container.database.confirm_session(claims)  # multipart steps run no SQL as the caller: checked here
    if found.is_admin:
        principal = "service"
    elif found.user_id:
        principal = f"user:{found.user_id}"
    else:
        principal = f"role:{found.role}"
    return S3Caller(claims, principal, claimed, matched)
