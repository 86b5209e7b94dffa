"""S3 access keys: issued by ``gatehouse s3-keys create``, kept in ``gatehouse.s3_access_keys``.

A key acts as the service role (as Supabase Storage's S3 access keys do: full access, RLS
bypassed), so it is for servers only. SigV4 proves possession of the secret by an HMAC the
server must recompute, so the secret itself has to be recoverable: it cannot be stored as a
one-way hash like a password. It is sealed with AES-GCM under a key derived from the JWT signing
key (``KeySet.derive``, the same scheme as the MFA factor secrets), with the access key id as
associated data (a sealed secret copied onto another row does not open). A copy of the database
alone does not yield usable secrets; whoever holds the signing key can already mint a
service_role token, so the derived key adds no new power to steal. Replacing the signing key
makes existing S3 secrets unreadable: issue new ones then.

The secret is shown once, when created.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gatehouse.core.keys import KeySet

PREFIX = "v1:"
Executor = asyncpg.Pool | asyncpg.Connection


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    description: str
    created_at: datetime
    last_used_at: datetime | None


class S3Keys:
    def __init__(self, keys: KeySet) -> None:
        self._aead = AESGCM(keys.derive(b"gatehouse s3 access key secrets v1"))

    def seal(self, access_key_id: str, secret: str) -> str:
        nonce = os.urandom(12)
        return PREFIX + base64.b64encode(nonce + self._aead.encrypt(nonce, secret.encode(), access_key_id.encode())).decode()

    def open(self, access_key_id: str, sealed: str) -> str | None:
        """The secret, or None if it was not sealed by this server's key for this access key id."""
        if not sealed.startswith(PREFIX):
            return None
        raw = base64.b64decode(sealed[len(PREFIX):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], access_key_id.encode()).decode()
        except InvalidTag:
            return None

    async def create(self, db: Executor, description: str = "") -> tuple[str, str]:
        """A new key: (access key id, secret)."""
        access_key_id, secret = secrets.token_hex(16), secrets.token_hex(32)
        await db.execute(
            "INSERT INTO gatehouse.s3_access_keys (access_key_id, sealed_secret, description) VALUES ($1, $2, $3)",
            access_key_id, self.seal(access_key_id, secret), description,
        )
        return access_key_id, secret

    async def secret(self, db: Executor, access_key_id: str) -> str | None:
        """The secret of a key, or None if there is no such key (or it does not open)."""
        if len(access_key_id) != 32:
            return None
        sealed = await db.fetchval(
            "WITH used AS (UPDATE gatehouse.s3_access_keys SET last_used_at = now() WHERE access_key_id = $1 "
            "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')) "
            "SELECT sealed_secret FROM gatehouse.s3_access_keys WHERE access_key_id = $1",
            access_key_id,
        )
        return None if sealed is None else self.open(access_key_id, sealed)

    @staticmethod
    async def list(db: Executor) -> list[AccessKey]:
        rows = await db.fetch(
            "SELECT access_key_id, description, created_at, last_used_at FROM gatehouse.s3_access_keys ORDER BY created_at"
        )
        return [AccessKey(row["access_key_id"], row["description"], row["created_at"], row["last_used_at"]) for row in rows]

    @staticmethod
    async def delete(db: Executor, access_key_id: str) -> bool:
        done = await db.fetchval("DELETE FROM gatehouse.s3_access_keys WHERE access_key_id = $1 RETURNING 1",
                                 access_key_id)
        return done is not None
