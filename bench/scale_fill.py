"""Bulk rows for ``bench.scale``: users as the API would have written them, without the API.

``fill`` grows a Gatehouse database to a number of users with ``INSERT ... SELECT`` over
``generate_series``, in chunks, as the embedded server's superuser: per user the row in
``auth.users`` (a confirmed address, one argon2id hash computed once and shared, so every bulk
user can log in with ``bench.harness.PASSWORD``), its email identity, the tutorial's profile as
after its account page saved it, ``SESSIONS`` sessions each with its ``mfa_amr_claims`` row and a
rotated chain of ``TOKENS`` refresh tokens (SHA-256 hashes, as ``gatehouse.auth.tokens`` stores
them), and the avatar object row ``<uid>-avatar.png`` with the metadata an upload of
``bench.steps.avatar_png`` writes. Once, a folder ``FOLDER/`` of ``FOLDER_SIZE`` objects in the
avatars bucket for the storage list. Then VACUUM ANALYZE and a CHECKPOINT. Row triggers are skipped (``session_replication_role =
replica``): the profile the sign-up trigger would add is written here with the rest.

Bytes: only the users a benchmark touches get their avatar's bytes (``place_avatars``: hard links
of one file at ``<data>/storage/blobs/avatars/<version>``, as the local backend lays them out).
``mint_sessions`` writes fresh sessions for chosen users with refresh tokens the caller knows.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gatehouse.auth.tokens import sha256_hex

#: Sessions per user, and refresh tokens per session (all but the last revoked: a rotated chain).
SESSIONS = 2
TOKENS = 2
FOLDER = "album"
FOLDER_SIZE = 10_000
CHUNK = 50_000
#: Bulk users' accounts start here and one second apart, in order: user i was created at EPOCH + i s.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

_USERS = """
INSERT INTO auth.users (id, aud, role, email, encrypted_password, email_confirmed_at, raw_app_meta_data,
                        raw_user_meta_data, is_super_admin, created_at, updated_at, last_sign_in_at)
SELECT id, 'authenticated', 'authenticated', 'scale-' || i || '@example.com', $3, t,
       '{"provider": "email", "providers": ["email"]}', jsonb_build_object('full_name', 'Scale ' || i), false, t, t, t
FROM (SELECT i, gen_random_uuid() AS id, $4::timestamptz + make_interval(secs => i) AS t
      FROM generate_series($1::bigint, $2::bigint) AS i) AS s
RETURNING id
"""

#: Everything a user owns, for the users of one chunk ($1: their ids).
_OWNED = [
    """INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
       SELECT u.id::text, u.id, jsonb_build_object('sub', u.id::text, 'email', u.email, 'email_verified', true,
                                                   'phone_verified', false), 'email', u.created_at, u.created_at, u.created_at
       FROM auth.users u WHERE u.id = ANY($1::uuid[])""",
    """INSERT INTO public.profiles (id, updated_at, username, full_name, avatar_url, website)
       SELECT u.id, u.created_at, 'scale_' || split_part(split_part(u.email, '@', 1), '-', 2),
              u.raw_user_meta_data ->> 'full_name', u.id || '-avatar.png', 'https://example.com/' || u.id
       FROM auth.users u WHERE u.id = ANY($1::uuid[])""",
    f"""INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, refreshed_at, user_agent, ip)
       SELECT gen_random_uuid(), u.id, u.created_at, u.created_at, 'aal1', u.created_at::timestamp,
              'Mozilla/5.0 (bench)', '127.0.0.1'
       FROM auth.users u, generate_series(1, {SESSIONS}) AS k WHERE u.id = ANY($1::uuid[])""",
    """INSERT INTO auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method)
       SELECT s.id, s.created_at, s.created_at, 'password' FROM auth.sessions s WHERE s.user_id = ANY($1::uuid[])""",
    f"""INSERT INTO auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, parent, session_id)
       SELECT encode(sha256(convert_to(s.id || '/' || k, 'UTF8')), 'hex'), s.user_id::text, k < {TOKENS},
              s.created_at, s.created_at,
              CASE WHEN k > 1 THEN encode(sha256(convert_to(s.id || '/' || (k - 1), 'UTF8')), 'hex') END, s.id
       FROM auth.sessions s, generate_series(1, {TOKENS}) AS k WHERE s.user_id = ANY($1::uuid[])""",
    """INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, version, created_at, updated_at,
                                    last_accessed_at)
       SELECT 'avatars', u.id || '-avatar.png', u.id, u.id::text, $2::jsonb, gen_random_uuid()::text,
              u.created_at, u.created_at, u.created_at
       FROM auth.users u WHERE u.id = ANY($1::uuid[])""",
]

_FOLDER = f"""
INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, version)
SELECT 'avatars', '{FOLDER}/photo-' || lpad(i::text, 5, '0') || '.png', $1::uuid, $1::text, $2::jsonb,
       gen_random_uuid()::text
FROM generate_series(1, {FOLDER_SIZE}) AS i
"""

TABLES = ("auth.users", "auth.identities", "public.profiles", "auth.sessions", "auth.mfa_amr_claims",
          "auth.refresh_tokens", "storage.objects")


def avatar_metadata(avatar: Path) -> dict[str, Any]:
    """What an upload of ``avatar`` as image/png writes into ``storage.objects.metadata``."""
    data = avatar.read_bytes()
    return {"eTag": f'"{hashlib.md5(data).hexdigest()}"', "size": len(data), "mimetype": "image/png",
            "cacheControl": "max-age=3600", "lastModified": EPOCH.isoformat(), "contentLength": len(data),
            "httpStatusCode": 200}


async def count_users(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM auth.users WHERE email LIKE 'scale-%'"))


@dataclass
class Filled:
    users: int
    added: int
    seconds: float
    analyze_seconds: float
    rows: dict[str, int]


async def fill(url: str, target: int, password_hash: str, avatar: Path, *, say: Any = print) -> Filled:
    """Add bulk users until there are ``target``; then VACUUM ANALYZE. Returns what it took."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET session_replication_role = replica")  # no row triggers: the rows come whole
        metadata = orjson.dumps(avatar_metadata(avatar)).decode()
        have = await count_users(conn)
        started = time.monotonic()
        for start in range(have + 1, target + 1, CHUNK):
            end = min(start + CHUNK - 1, target)
            async with conn.transaction():
                ids = [row["id"] for row in await conn.fetch(_USERS, start, end, password_hash, EPOCH)]
                for statement in _OWNED:
                    await conn.execute(statement, ids, *([metadata] if "$2" in statement else []))
            say(f"  {end:>9,} users  {time.monotonic() - started:6.1f} s")
        if not await conn.fetchval(f"SELECT EXISTS (SELECT FROM storage.objects WHERE bucket_id = 'avatars' "
                                   f"AND name = '{FOLDER}/photo-00001.png')"):
            owner = await conn.fetchval("SELECT id FROM auth.users WHERE email = 'scale-1@example.com'")
            await conn.execute(_FOLDER, owner, metadata)
        seconds = time.monotonic() - started
        started = time.monotonic()
        for table in TABLES:
            await conn.execute(f"VACUUM ANALYZE {table}")
        await conn.execute("CHECKPOINT")  # the fill's writes reach disk now, not while a step is measured
        analyze = time.monotonic() - started
        rows = {table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in TABLES}
        return Filled(target, target - have, seconds, analyze, rows)
    finally:
        await conn.close()


@dataclass
class BulkUser:
    index: int
    id: str
    email: str
    avatar_version: str


async def pick(url: str, total: int, count: int, seed: int) -> list[BulkUser]:
    """``count`` bulk users drawn at random from all ``total`` (oldest to newest alike)."""
    import random

    indexes = random.Random(seed).sample(range(1, total + 1), min(count, total))
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT u.id, u.email, o.version FROM auth.users u JOIN storage.objects o "
            "ON o.bucket_id = 'avatars' AND o.name = u.id || '-avatar.png' WHERE u.email = ANY($1::text[])",
            [f"scale-{i}@example.com" for i in indexes],
        )
    finally:
        await conn.close()
    found = {row["email"]: row for row in rows}
    return [BulkUser(i, str(found[e]["id"]), e, found[e]["version"])
            for i, e in ((i, f"scale-{i}@example.com") for i in indexes)]


def place_avatars(data_dir: Path, avatar: Path, users: list[BulkUser]) -> None:
    """The avatar bytes of ``users``, where the local backend keeps them (hard links of one file)."""
    folder = data_dir / "storage" / "blobs" / "avatars"
    folder.mkdir(parents=True, exist_ok=True)
    for user in users:
        path = folder / user.avatar_version
        if not path.exists():
            os.link(avatar, path)


async def mint_sessions(url: str, users: list[BulkUser]) -> list[tuple[uuid.UUID, str]]:
    """A new session per user, as a password log-in writes it: (session id, its raw refresh token)."""
    tokens = [secrets.token_urlsafe(32) for _ in users]
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS t(user_id, token_hash)),
            s AS (
                INSERT INTO auth.sessions (user_id, aal, ip, user_agent, refreshed_at)
                SELECT user_id, 'aal1', '127.0.0.1', 'bench', now()::timestamp FROM input
                RETURNING id, user_id
            ), amr AS (
                INSERT INTO auth.mfa_amr_claims (session_id, authentication_method) SELECT id, 'password' FROM s
            ), rt AS (
                INSERT INTO auth.refresh_tokens (token, user_id, session_id, revoked)
                SELECT input.token_hash, s.user_id::text, s.id, false FROM s JOIN input USING (user_id)
                RETURNING session_id, token
            )
            SELECT session_id, token FROM rt
            """,
            [u.id for u in users], [sha256_hex(t) for t in tokens],
        )
    finally:
        await conn.close()
    by_hash = {row["token"]: row["session_id"] for row in rows}
    return [(by_hash[sha256_hex(t)], t) for t in tokens]


__all__ = ["FOLDER", "BulkUser", "Filled", "avatar_metadata", "count_users", "fill", "mint_sessions", "pick",
           "place_avatars"]
