"""The signing keyring: rotating the key that signs tokens without signing anyone out.

The rows live in ``gatehouse.signing_keys`` (migration 0034). A rotation is three steps, each
one transaction under one advisory lock, each followed by a NOTIFY on ``gatehouse_signing_keys``:

1. ``create_standby``: a new key, published in the JWKS and accepted at once but not signing, so
   that every process and every client's JWKS cache knows it before it signs anything.
2. ``switch``: the standby key signs from now on; the key that signed becomes ``previous``, still
   published and accepted, so tokens it signed keep working. Refresh tokens are opaque rows, so a
   client refreshing after the switch simply gets a token signed by the new key.
3. ``retire``: a previous key is dropped from the JWKS and refused, once no token it signed can
   still be valid: ``deactivated_at`` (when it stopped signing) plus the longest life a token can
   have (the app passes it: access tokens, signed URLs) plus ``RELOAD_MARGIN``, the time other
   processes may take to hear of the switch (the poll backstop) and their clocks may be apart.

The configured key is the root: ``KeySet.derive`` keeps using it whatever the ring does, and it
signs until the first switch; it has a row (no private key stored) from the first change on.
The other keys' private keys are sealed with AES-GCM under ``derive(b"gatehouse signing keys
v1")``, the kid as associated data. Every process follows: ``Keyring.start`` LISTENs, loads, and
reloads on each notification and every ``poll`` seconds (a lost NOTIFY costs at most that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gatehouse.core.background import cancel
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet, Ring, SigningKey
from gatehouse.core.listen import HeldListener, ListenHub

log = logging.getLogger("gatehouse.keyring")

CHANNEL = "gatehouse_signing_keys"
#: Added to the longest token life before a previous key may retire: the poll backstop with room
#: to spare, and clocks of several machines a little apart.
RELOAD_MARGIN = 60
POLL_SECONDS = 5.0
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('gatehouse.signing_keys'))"
_COLUMNS = ("kid, root, public_jwk, sealed_private_key, state, created_at, activated_at, deactivated_at, "
            "retired_at")


@dataclass(frozen=True)
class KeyRecord:
    """One key of the ring as the dashboard shows it (never its private key)."""

    kid: str
    state: str
    root: bool
    created_at: datetime | None
    activated_at: datetime | None
    deactivated_at: datetime | None
    retired_at: datetime | None
    #: For a previous key: when it may retire (no token it signed can be valid after that).
    retire_after: datetime | None


class KeyringError(GatehouseError):
    """A rotation step that cannot be taken now; the message says why and when it can."""


class Keyring:
    def __init__(self, keys: KeySet, pool: Callable[[], asyncpg.Pool], *, longest_token_life: int,
                 poll: float = POLL_SECONDS, hub: Callable[[], ListenHub] | None = None) -> None:
        self._keys = keys
        self._pool = pool
        self._hub = hub or (lambda: ListenHub(pool()))
        self._aead = AESGCM(keys.derive(b"gatehouse signing keys v1"))
        self.retire_wait = longest_token_life + RELOAD_MARGIN
        self._poll = poll
        self._seen: tuple[tuple[str, str], ...] = ()
        self._dirty = asyncio.Event()
        self._listener: HeldListener | None = None
        self._task: asyncio.Task[None] | None = None

    # -- following the ring ---------------------------------------------------------------------

    async def start(self) -> None:
        """LISTEN, load, then reload on each notification and every ``poll`` seconds."""
        self._listener = HeldListener(self._hub(), (CHANNEL,), lambda *_: self._dirty.set(), name="keyring",
                                      on_reconnect=self._dirty.set)
        await self._listener.start(self.load)
        self._task = asyncio.create_task(self._follow(), name="gatehouse-keyring")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        if self._listener is not None:
            await self._listener.stop()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._poll)
            self._dirty.clear()
            try:
                await self.load()
            except Exception as exc:  # noqa: BLE001 - the follower must outlive a lost database
                log.warning("could not reload the signing keys (%s); keeping the ones in force", exc)

    async def load(self) -> None:
        """Read the ring and put it in force in this process (a no-op when nothing changed)."""
        rows = await self._pool().fetch(f"SELECT {_COLUMNS} FROM gatehouse.signing_keys WHERE root_kid = $1",
                                        self._keys.kid)
        seen = tuple(sorted((row["kid"], row["state"]) for row in rows))
        if seen != self._seen:
            self._keys.use_ring(self._ring(rows))
            self._seen = seen

    def _ring(self, rows: list[asyncpg.Record]) -> Ring:
        root = self._keys.root
        if not rows:
            return Ring(root, {root.kid: root}, root.kid)
        published: dict[str, SigningKey] = {}
        current: SigningKey | None = None
        for row in rows:
            if row["state"] == "retired":
                continue
            key = root if row["root"] else self._unseal(row)
            if key is None:
                continue
            published[key.kid] = key
            if row["state"] == "current":
                current = key
        if current is None:  # not reachable through the steps above; never leave a process unable to sign
            log.error("the signing keyring has no usable current key; signing with the root key")
            current = published.setdefault(root.kid, root)
        return Ring(current, published, root.kid)

    def _seal(self, kid: str, private_key: ec.EllipticCurvePrivateKey) -> bytes:
        der = private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, der, kid.encode())

    def _unseal(self, row: asyncpg.Record) -> SigningKey | None:
        sealed = bytes(row["sealed_private_key"])
        try:
            der = self._aead.decrypt(sealed[:12], sealed[12:], row["kid"].encode())
            private_key = serialization.load_der_private_key(der, password=None)
        except (InvalidTag, ValueError):
            log.error("the signing key %s cannot be unsealed with this root key; it is ignored", row["kid"])
            return None
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            return None
        key = SigningKey.of(private_key)
        return key if key.kid == row["kid"] else None

    # -- what the dashboard shows -----------------------------------------------------------------

    async def records(self) -> list[KeyRecord]:
        """Every key of the ring, the root's too (its implicit state while it has no row)."""
        rows = await self._pool().fetch(
            f"SELECT {_COLUMNS} FROM gatehouse.signing_keys WHERE root_kid = $1 "
            "ORDER BY created_at DESC, kid", self._keys.kid)
        found = [self._record(row) for row in rows]
        if not any(record.root for record in found):
            found.append(KeyRecord(self._keys.kid, "current", True, None, None, None, None, None))
        order = {"standby": 0, "current": 1, "previous": 2, "retired": 3}
        return sorted(found, key=lambda record: order[record.state])

    def _record(self, row: asyncpg.Record) -> KeyRecord:
        deactivated = row["deactivated_at"]
        after = deactivated + timedelta(seconds=self.retire_wait) if row["state"] == "previous" else None
        return KeyRecord(row["kid"], row["state"], row["root"], row["created_at"], row["activated_at"], deactivated,
                         row["retired_at"], after)

    # -- the three steps --------------------------------------------------------------------------

    async def create_standby(self) -> KeyRecord:
        private_key = ec.generate_private_key(ec.SECP256R1())
        key = SigningKey.of(private_key)
        async with self._changing() as conn:
            if await conn.fetchval("SELECT 1 FROM gatehouse.signing_keys WHERE root_kid = $1 AND state = 'standby'",
                                   self._keys.kid):
                raise KeyringError("standby_exists", "A standby key is already published: switch to it first.",
                                   status=409)
            row = await conn.fetchrow(
                "INSERT INTO gatehouse.signing_keys (kid, root_kid, public_jwk, sealed_private_key, state) "
                f"VALUES ($1, $2, $3, $4, 'standby') RETURNING {_COLUMNS}",
                key.kid, self._keys.kid, key.public_jwk, self._seal(key.kid, private_key))
        await self.load()
        return self._record(row)

    async def switch(self) -> tuple[KeyRecord, KeyRecord]:
        """The standby key becomes current and the current one previous: (new, old)."""
        async with self._changing() as conn:
            standby = await conn.fetchval(
                "SELECT kid FROM gatehouse.signing_keys WHERE root_kid = $1 AND state = 'standby'", self._keys.kid)
            if standby is None:
                raise KeyringError("no_standby_key", "There is no standby key to switch to: create one first.",
                                   status=409)
            old = await conn.fetchrow(
                "UPDATE gatehouse.signing_keys SET state = 'previous', deactivated_at = now() "
                f"WHERE root_kid = $1 AND state = 'current' RETURNING {_COLUMNS}", self._keys.kid)
            new = await conn.fetchrow(
                "UPDATE gatehouse.signing_keys SET state = 'current', activated_at = now() "
                f"WHERE kid = $1 RETURNING {_COLUMNS}", standby)
        await self.load()
        return self._record(new), self._record(old)

    async def retire(self, kid: str) -> KeyRecord:
        """Retire a previous key, refused until no token it signed can still be valid."""
        async with self._changing() as conn:
            row = await conn.fetchrow(
                "UPDATE gatehouse.signing_keys SET state = 'retired', retired_at = now() "
                "WHERE kid = $1 AND root_kid = $2 AND state = 'previous' "
                f"AND deactivated_at + make_interval(secs => $3) <= now() RETURNING {_COLUMNS}",
                kid, self._keys.kid, float(self.retire_wait))
            if row is None:
                found = await conn.fetchrow(f"SELECT {_COLUMNS} FROM gatehouse.signing_keys WHERE kid = $1 "
                                            "AND root_kid = $2", kid, self._keys.kid)
                if found is None or found["state"] != "previous":
                    raise KeyringError("not_previous", "Only a previous key (one that no longer signs) can be "
                                       "retired.", status=409)
                after = self._record(found).retire_after
                raise KeyringError("still_valid", "Tokens this key signed may still be valid: it can be retired "
                                   f"from {after:%Y-%m-%d %H:%M:%S} UTC.", status=409, retire_after=after)
        await self.load()
        return self._record(row)

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[Any]:
        """One transaction under the keyring's lock, the root's row made if missing, then NOTIFY."""
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(_LOCK)
            await conn.execute(
                "INSERT INTO gatehouse.signing_keys (kid, root_kid, root, public_jwk, state, activated_at) "
                "VALUES ($1, $1, true, $2, 'current', now()) ON CONFLICT (kid) DO NOTHING",
                self._keys.kid, self._keys.public_jwk)
            yield conn
            await conn.execute(f"NOTIFY {CHANNEL}")
