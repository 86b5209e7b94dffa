"""Supabase's auth and storage rows, mapped column by column into Gatehouse's tables of the same names.

The rows are staged first: a temporary table of text columns per Supabase table, filled by COPY
(or by the dump's INSERTs, aimed at it). Each staged column Gatehouse also has is cast to
Gatehouse's type (a NULL where Gatehouse has NOT NULL and a default becomes that default); a
column Gatehouse has no place for is named in the summary; generated columns are computed again.
Before anything is written: password hashes Gatehouse cannot verify, and users, identities,
factors or buckets it already has, stop the import.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import asyncpg

from gatehouse.auth.mfa.totp import SecretBox
from gatehouse.ops.importer import files as bucket_files
from gatehouse.ops.importer.dump import Copy, Statement, tokens
from gatehouse.ops.importer.plan import staged_insert
from gatehouse.ops.importer.report import ImportFailed, Summary
from gatehouse.rest.sqlgen import ident, qualified
from gatehouse.storage.backends import Backend

__all__ = ["STARTER_HINT", "Mapper", "Triggers"]

#: Hashes Gatehouse verifies (auth/passwords.py): GoTrue's bcrypt, and argon2 as GoTrue accepts imported.
KNOWN_HASH = r"^(\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}|\$argon2(id|i)\$.+)$"
TRIGGER_MODES = {"O": "ENABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}
STARTER_HINT = (" If that is Gatehouse's built-in starter (public.profiles, the avatars bucket), set "
                "GATEHOUSE_STARTER_SCHEMA=none: the next start (or `gatehouse migrate`) removes it while it is empty.")


class Triggers:
    """User triggers of the tables being loaded are off for the load and back on before the commit, as in a
    data-only restore: a profile-creating trigger must not collide with the dumped profiles."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.disabled: dict[str, list[tuple[str, str]]] = {}

    async def disable(self, schema: str, table: str) -> None:
        key = qualified(schema, table)
        if key in self.disabled:
            return
        rows = await self.conn.fetch(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal "
            "AND tgenabled <> 'D'", key,
        )
        self.disabled[key] = [(row["tgname"], row["tgenabled"]) for row in rows]
        for name, _mode in self.disabled[key]:
            await self.conn.execute(f"ALTER TABLE {key} DISABLE TRIGGER {ident(name)}")

    async def enable(self) -> None:
        for key, triggers in self.disabled.items():
            for name, mode in triggers:
                await self.conn.execute(f"ALTER TABLE {key} {TRIGGER_MODES.get(mode, 'ENABLE')} TRIGGER {ident(name)}")


class Mapper:
    def __init__(self, conn: asyncpg.Connection, summary: Summary, box: SecretBox, triggers: Triggers) -> None:
        self.conn = conn
        self.summary = summary
        self.box = box
        self.triggers = triggers

    # -- staging Supabase's auth and storage rows -----------------------------------------------------
    async def stage(self, schema: str, table: str, items: list[Copy | Statement]) -> None:
        staging = f"pg_temp.{ident(f'import_{schema}_{table}')}"
        columns: list[str] = []
        for item in items:
            wanted = list(item.columns) if isinstance(item, Copy) else _insert_columns(item)
            new = [c for c in wanted if c not in columns]
            if not columns:
                await self.conn.execute(f"CREATE TEMP TABLE {staging} ({', '.join(ident(c) + ' text' for c in new)}) "
                                        "ON COMMIT DROP")
            else:
                for column in new:
                    await self.conn.execute(f"ALTER TABLE {staging} ADD COLUMN {ident(column)} text")
            columns += new
            try:
                if isinstance(item, Copy):
                    await self.conn.copy_to_table(f"import_{schema}_{table}", schema_name="pg_temp", columns=wanted,
                                                  source=io.BytesIO(item.data.encode("utf-8")), format="text")
                else:
                    await self.conn.execute(staged_insert(item.sql, staging))
            except asyncpg.PostgresError as exc:
                raise ImportFailed(f"the rows of {schema}.{table} (line {item.line}) cannot be read: {exc}") from None
        if not columns:
            await self.conn.execute(f"CREATE TEMP TABLE {staging} (id text) ON COMMIT DROP")

    async def check_hashes(self) -> None:
        if not await self.staged_has("auth", "users", "encrypted_password"):
            return
        bad = await self.conn.fetch(
            "SELECT id, left(encrypted_password, 4) AS prefix FROM pg_temp.import_auth_users "
            f"WHERE coalesce(encrypted_password, '') <> '' AND encrypted_password !~ '{KNOWN_HASH}' ORDER BY id"
        )
        if bad:
            shown = ", ".join(f"{row['id']} ({row['prefix']}…)" for row in bad[:5])
            raise ImportFailed(
                f"{len(bad)} users have a password hash Gatehouse cannot verify (it knows bcrypt $2a$/$2b$/$2y$ "
                f"and argon2): {shown}. Nothing was imported."
            )

    async def staged_has(self, schema: str, table: str, *columns: str) -> bool:
        have = await self.conn.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = ANY($2::text[])",
            f"pg_temp.import_{schema}_{table}", list(columns),
        )
        return bool(have == len(columns))

    async def check_conflicts(self) -> None:
        found: list[str] = []
        checks = [
            (("auth", "users", "id", "email"),
             ("SELECT s.id, s.email FROM pg_temp.import_auth_users s JOIN auth.users u ON u.id = s.id::uuid "
             "OR (coalesce(s.email, '') <> '' AND lower(u.email) = lower(s.email) AND NOT u.is_sso_user)"),
             "user {id} <{email}>"),
            (("auth", "users", "phone"),
             ("SELECT s.phone FROM pg_temp.import_auth_users s JOIN auth.users u ON u.phone = s.phone "
             "WHERE coalesce(s.phone, '') <> ''"), "phone {phone}"),
            (("auth", "identities", "id", "provider", "provider_id"),
             ("SELECT s.provider, s.provider_id FROM pg_temp.import_auth_identities s JOIN auth.identities i "
             "ON i.id = s.id::uuid OR (i.provider = s.provider AND i.provider_id = s.provider_id)"),
             "identity {provider}:{provider_id}"),
            (("auth", "mfa_factors", "id"),
             "SELECT s.id FROM pg_temp.import_auth_mfa_factors s JOIN auth.mfa_factors f ON f.id = s.id::uuid",
             "MFA factor {id}"),
            (("storage", "buckets", "id"),
             "SELECT s.id FROM pg_temp.import_storage_buckets s JOIN storage.buckets b ON b.id = s.id OR b.name = s.name",
             "bucket {id}"),
        ]
        for (schema, table, *columns), sql, label in checks:
            if await self.staged_has(schema, table, *columns):
                found += [label.format(**dict(row)) for row in await self.conn.fetch(sql)]
        if found:
            raise ImportFailed(
                f"Gatehouse already has {len(found)} of the dump's users, identities or buckets: "
                + ", ".join(found[:5]) + (f", … ({len(found) - 5} more)" if len(found) > 5 else "")
                + ". Nothing was imported (was this dump imported already?). Import into a Gatehouse without them, "
                "or delete them first." + (STARTER_HINT if "bucket avatars" in found else "")
            )

    async def target_columns(self, schema: str, table: str) -> dict[str, str]:
        """Gatehouse's writable columns of the table, each with the expression that casts a staged text value
        to its type (a NULL where Gatehouse has NOT NULL and a default becomes that default)."""
        rows = await self.conn.fetch(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) AS fallback FROM pg_attribute a "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
            "ORDER BY a.attnum",
            qualified(schema, table),
        )
        casts = {}
        for row in rows:
            cast = f"s.{ident(row['attname'])}::{row['type']}"
            if row["attnotnull"] and row["fallback"]:
                cast = f"coalesce({cast}, {row['fallback']})"
            casts[row["attname"]] = cast
        return casts

    async def staged_columns(self, schema: str, table: str) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum", f"pg_temp.import_{schema}_{table}",
        )
        return [row["attname"] for row in rows]

    async def mapping(self, schema: str, table: str, *, computed: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
        """The target columns and the staged expressions cast to their types; unmapped ones go to the summary."""
        target = await self.target_columns(schema, table)
        staged = await self.staged_columns(schema, table)
        generated = {row["attname"] for row in await self.conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attgenerated <> ''",
            qualified(schema, table))}
        unmapped = [c for c in staged if c not in target and c not in generated and c not in computed]
        if unmapped and await self.conn.fetchval(f"SELECT count(*) FROM pg_temp.import_{schema}_{table}"):
            self.summary.unmapped_columns[f"{schema}.{table}"] = unmapped
        columns = [c for c in staged if c in target and c not in computed]
        return columns, [target[c] for c in columns]

    async def map_rows(self, schema: str, table: str) -> int:
        columns, values = await self.mapping(schema, table)
        if not columns:
            return 0
        await self.triggers.disable(schema, table)
        try:
            status = await self.conn.execute(
                f"INSERT INTO {qualified(schema, table)} ({', '.join(ident(c) for c in columns)}) "
                f"SELECT {', '.join(values)} FROM pg_temp.import_{schema}_{table} s"
            )
        except asyncpg.PostgresError as exc:
            raise ImportFailed(f"the rows of {schema}.{table} do not fit Gatehouse's table: {exc}") from None
        return int(status.rsplit(" ", 1)[1])

    async def map_factors(self) -> int:
        """MFA factors come along, so that no account loses its second factor. Supabase keeps TOTP secrets
        in plain text (unless GOTRUE_SECURITY_DB_ENCRYPTION was on); Gatehouse seals them with its key."""
        if not await self.staged_has("auth", "mfa_factors", "id", "secret"):
            return await self.map_rows("auth", "mfa_factors")
        rows = await self.conn.fetch("SELECT id, secret FROM pg_temp.import_auth_mfa_factors ORDER BY id")
        sealed_ids, sealed, unreadable = [], [], []
        for row in rows:
            secret = row["secret"]
            if secret and secret.lstrip().startswith("{"):
                unreadable.append(row["id"])
                continue
            sealed_ids.append(row["id"])
            sealed.append(self.box.seal(uuid.UUID(row["id"]), secret) if secret else None)
        if unreadable:
            raise ImportFailed(
                f"{len(unreadable)} MFA factors have secrets encrypted with Supabase's database encryption key "
                f"(GOTRUE_SECURITY_DB_ENCRYPTION): {', '.join(unreadable[:5])}. Gatehouse cannot read them, and "
                "importing the users without them would drop their second factor. Nothing was imported."
            )
        columns, values = await self.mapping("auth", "mfa_factors", computed=("secret",))
        if not columns:
            return 0
        await self.triggers.disable("auth", "mfa_factors")
        try:
            status = await self.conn.execute(
                f"INSERT INTO auth.mfa_factors ({', '.join(ident(c) for c in columns)}, secret) "
                f"SELECT {', '.join(values)}, c.secret FROM pg_temp.import_auth_mfa_factors s "
                "JOIN unnest($1::text[], $2::text[]) AS c(id, secret) ON c.id = s.id",
                sealed_ids, sealed,
            )
        except asyncpg.PostgresError as exc:
            raise ImportFailed(f"the rows of auth.mfa_factors do not fit Gatehouse's table: {exc}") from None
        return int(status.rsplit(" ", 1)[1])

    # -- objects and their bytes --------------------------------------------------------------------------
    async def objects(self, files: Path | None, backend: Backend | None, written: list[str]) -> None:
        if not await self.staged_has("storage", "objects", "bucket_id", "name"):
            return
        rows = await self.conn.fetch(
            "SELECT s.*, EXISTS (SELECT 1 FROM storage.objects o WHERE o.bucket_id = s.bucket_id AND o.name = s.name) "
            "AS taken FROM pg_temp.import_storage_objects s ORDER BY s.bucket_id, s.name"
        )
        on_disk = bucket_files.inventory(files) if files is not None else {}
        chosen: list[tuple[str, str, str]] = []  # (bucket_id, name, version)
        metadatas: list[str] = []  # the metadata of each, as JSON
        for row in rows:
            label = f"{row['bucket_id']}/{row['name']}"
            if row["taken"]:
                raise ImportFailed(f"Gatehouse already has the object {label}. Nothing was imported.")
            if files is None:
                self.summary.objects_without_file.append(label)
                continue
            on_disk.get(row["bucket_id"], set()).discard(row["name"])
            try:
                path = bucket_files.locate(files, row["bucket_id"], row["name"])
            except bucket_files.Refused as exc:
                self.summary.objects_refused.append(f"{label} ({exc})")
                continue
            if path is None:
                self.summary.objects_without_file.append(label)
                continue
            metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
            metadata = metadata if isinstance(metadata, dict) else {}
            version = str(uuid.uuid4())
            mimetype = str(metadata.get("mimetype") or "application/octet-stream")
            if backend is not None:
                copied = bucket_files.copy_into(path, backend.spool_dir)
                try:
                    key = f"{row['bucket_id']}/{version}"
                    written.append(key)
                    await backend.put(key, copied.path, content_type=mimetype)
                finally:
                    copied.path.unlink(missing_ok=True)
                size, etag = copied.size, copied.md5
            else:
                size, etag = path.stat().st_size, ""
            metadata |= {"size": size, "contentLength": size, "mimetype": mimetype}
            if etag:
                metadata["eTag"] = f'"{etag}"'
            metadata.setdefault("cacheControl", "no-cache")
            metadata.setdefault("httpStatusCode", 200)
            chosen.append((row["bucket_id"], row["name"], version))
            metadatas.append(json.dumps(metadata))
            self.summary.bytes += size
        self.summary.files_without_row = sorted(
            f"{bucket}/{name}" if bucket else f"{name} (not in a bucket's folder)"
            for bucket, names in on_disk.items() for name in names
        )
        if not chosen:
            return
        columns, values = await self.mapping("storage", "objects", computed=("version", "metadata"))
        await self.triggers.disable("storage", "objects")
        status = await self.conn.execute(
            f"INSERT INTO storage.objects ({', '.join(ident(c) for c in columns)}, version, metadata) "
            f"SELECT {', '.join(values)}, c.version, c.metadata::jsonb FROM pg_temp.import_storage_objects s "
            "JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS c(bucket_id, name, version, metadata) "
            "ON c.bucket_id = s.bucket_id AND c.name = s.name",
            [c[0] for c in chosen], [c[1] for c in chosen], [c[2] for c in chosen], metadatas,
        )
        self.summary.objects = int(status.rsplit(" ", 1)[1])


def _insert_columns(item: Statement) -> list[str]:
    toks = tokens(item.sql)
    start = next((i for i, t in enumerate(toks) if t.value == "("), None)
    if start is None:
        raise ImportFailed(f"line {item.line}: an INSERT without a column list; dump with --column-inserts")
    columns = []
    for token in toks[start + 1:]:
        if token.value == ")":
            break
        if token.kind in ("word", "quoted"):
            columns.append(token.value)
    return columns
