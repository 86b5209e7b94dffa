"""Signed URLs: tokens that grant one download or one upload of one object, with no other credential.

A token is a JWT of this server's keys with audience ``storage``, a ``purpose`` and the
``url`` (``bucket/name``) it grants. A download token also names the object's version, so
replacing the object (upsert, delete and upload again, a move onto its name) retires it.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from gatehouse.core.keys import InvalidToken, JWTVerifier, KeySet
from gatehouse.storage.errors import storage_error
from gatehouse.storage.models import StoredObject
from gatehouse.storage.objects import Objects


class Signing:
    def __init__(self, keys: KeySet, objects: Objects) -> None:
        self.keys = keys
        self.objects = objects
        self.verifier = JWTVerifier(keys, audiences=frozenset({"storage"}))

    def sign(self, purpose: str, bucket_id: str, name: str, expires_in: int, **extra: Any) -> str:
        now = int(time.time())
        return self.keys.sign({"aud": "storage", "purpose": purpose, "url": f"{bucket_id}/{name}", "iat": now,
                               "exp": now + expires_in, **extra})

    def sign_download(self, obj: StoredObject, expires_in: int, *, transform: dict[str, str] | None = None) -> str:
        """A download token for this version of the object.
        ``transform``: the image transformation a render with this token must use."""
        extra: dict[str, Any] = {"v": obj.version}
        if transform:
            extra["transform"] = transform
        return self.sign("storage.download", obj.bucket_id, obj.name, expires_in, **extra)

    async def signed_object(self, token: str, bucket_id: str, name: str) -> tuple[StoredObject, dict[str, Any]]:
        """The object a download token grants, if it is still the version the token was made for,
        and the token's claims.

        A signed URL is a capability: the object is read without the caller's RLS context.
        """
        grant = self.check_signed(token, "storage.download", bucket_id, name)
        obj = await self.objects.find({"role": "service_role"}, bucket_id, name)
        if not hmac.compare_digest(str(grant.get("v", "")).encode(), obj.version.encode()):
            raise storage_error(
                "InvalidSignature",
                "the signed URL was made for an earlier version of this object; ask for a new one", 400,
            )
        return obj, grant

    def check_signed(self, token: str, purpose: str, bucket_id: str, name: str) -> dict[str, Any]:
        """The claims of a token made for ``purpose`` on this object; else 400 (expired or not valid)."""
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as exc:
            if "expired" in str(exc):
                raise storage_error("ExpiredToken", "the signed URL has expired", 400) from None
            raise storage_error("InvalidSignature", f"the signed URL is not valid: {exc}", 400) from None
        if claims.get("purpose") != purpose or claims.get("aud") != "storage" or claims.get("url") != f"{bucket_id}/{name}":
            raise storage_error("InvalidSignature", "the signed URL does not match this object", 400)
        return claims
