"""Run a Supabase dump into Gatehouse's database: one transaction, all or nothing.

Why not psql into a staging database and copy across: the dump is run here, statement by
statement, on one asyncpg connection inside one transaction, so a failure anywhere (a conflict,
a bad hash, a statement Gatehouse's PostgreSQL refuses, a missing file) leaves no trace, and a
dry run is the same run rolled back. It needs no second database and works the same against the
embedded PostgreSQL and an external ``GATEHOUSE_DATABASE_URL``.

Order: Supabase's ``auth.users``, ``auth.identities`` and ``storage.buckets`` rows are staged
(temporary tables of text columns, filled by COPY) and mapped into Gatehouse's tables first, so
that the app's rows referencing users load whatever order the dump has; then the app's
statements and rows run in the dump's order; then objects, whose bytes go to the storage backend
(written before the commit and removed again if it does not happen). User triggers of the tables
being loaded are disabled for the load and enabled again before the commit, as a data-only
restore does, so that, for one, a profile-creating trigger does not collide with the dumped profiles.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from gatehouse.auth.mfa.totp import SecretBox
from gatehouse.core.keys import KeySet
from gatehouse.ops.importer import files as bucket_files
from gatehouse.ops.importer.dump import Copy, DumpError, Statement, split, tokens
from gatehouse.ops.importer.plan import Step, classify, implied_extensions, staged_insert
from gatehouse.ops.importer.report import ImportFailed, Summary
from gatehouse.storage.backends import Backend, create_backend

__all__ = ["Dump", "import_supabase", "read_dumps"]

#: Hashes Gatehouse verifies (auth/passwords.py): GoTrue's bcrypt, and argon2 as GoTrue accepts imported.
KNOWN_HASH = r"^(\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}|\$argon2(id|i)\$.+)$"
STARTER_HINT = (" If that is Gatehouse's built-in starter (public.profiles, the avatars bucket), set "
                "GATEHOUSE_STARTER_SCHEMA=none: the next start (or `gatehouse migrate`) removes it while it is empty.")
TRIGGER_MODES = {"O": "ENABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


@dataclass(frozen=True)
class Dump:
    """One dump file's steps, with its name for messages."""

    name: str
    steps: list[Step]


def read_dumps(paths: Sequence[Path]) -> list[Dump]:
    dumps = []
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ImportFailed(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ImportFailed(f"{path} is not a plain-text (UTF-8) pg_dump file") from None
        try:
            dumps.append(Dump(str(path), [classify(item) for item in split(text)]))
        except DumpError as exc:
            raise ImportFailed(f"{path}: {exc}") from None
    if not any(step.action in ("run", "stage", "load") for dump in dumps for step in dump.steps):
        raise ImportFailed("the dump holds neither app tables nor Supabase users: not a pg_dump of a Supabase project")
    return dumps


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def import_supabase(settings: Any, url: str, keys: KeySet, dumps: list[Dump], files: Path | None, *,
                    dry_run: bool) -> Summary:
    import asyncio

    return asyncio.run(_import(settings, url, keys, dumps, files, dry_run=dry_run))


async def _import(settings: Any, url: str, keys: KeySet, dumps: list[Dump], files: Path | None, *,
                  dry_run: bool) -> Summary:
    summary = Summary(dry_run=dry_run, files_given=files is not None)
    backend = create_backend(settings) if files is not None and not dry_run else None
    written: list[str] = []
    conn = await asyncpg.connect(url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        committed = False
        try:
            try:
                await _Run(conn, summary, SecretBox(keys)).everything(dumps, files, backend, written)
            except asyncpg.PostgresError as exc:
                raise ImportFailed(f"the import failed: {exc}. Nothing was imported.") from None
            if not dry_run:
                await transaction.commit()
                committed = True
        finally:
            if not committed:  # a dry run, or a failure: nothing stays, neither rows nor bytes
                try:
                    await transaction.rollback()
                except asyncpg.InterfaceError:
                    pass  # the failed commit ended it already
                if backend is not None and written:
                    await backend.delete_many(written)
    finally:
        await conn.close()
        if backend is not None:
            await backend.close()
    return summary


class _Run:
    def __init__(self, conn: asyncpg.Connection, summary: Summary, box: SecretBox) -> None:
        self.conn = conn
        self.summary = summary
        self.box = box
        self.disabled: dict[str, list[tuple[str, str]]] = {}

    async def everything(self, dumps: list[Dump], files: Path | None, backend: Backend | None,
                         written: list[str]) -> None:
        staged: dict[tuple[str, str], list[Copy | Statement]] = defaultdict(list)
        for dump in dumps:
            for step in dump.steps:
                if step.action == "stage":
                    staged[(step.schema or "", step.name or "")].append(step.item)  # type: ignore[arg-type]
        for schema, table in (("auth", "users"), ("auth", "identities"), ("auth", "mfa_factors"), ("storage", "buckets"),
                              ("storage", "objects")):
            await self.stage(schema, table, staged.get((schema, table), []))
        await self.check_hashes()
        await self.check_conflicts()
        self.summary.users = await self.map_rows("auth", "users")
        self.summary.identities = await self.map_rows("auth", "identities")
        self.summary.factors = await self.map_factors()
        self.summary.buckets = await self.map_rows("storage", "buckets")
        for name in implied_extensions([step for dump in dumps for step in dump.steps]):
            sql = f"CREATE EXTENSION IF NOT EXISTS {q(name)} WITH SCHEMA extensions"
            await self.extension(Step("extension", Statement(sql, 0), "extension", "extensions", name))
        for dump in dumps:
            for step in dump.steps:
                await self.step(dump.name, step)
        await self.objects(files, backend, written)
        await self.enable_triggers()

    # -- staging Supabase's auth and storage rows -----------------------------------------------------
    async def stage(self, schema: str, table: str, items: list[Copy | Statement]) -> None:
        staging = f"pg_temp.{q(f'import_{schema}_{table}')}"
        columns: list[str] = []
        for item in items:
            wanted = list(item.columns) if isinstance(item, Copy) else _insert_columns(item)
            new = [c for c in wanted if c not in columns]
            if not columns:
                await self.conn.execute(f"CREATE TEMP TABLE {staging} ({', '.join(q(c) + ' text' for c in new)}) "
                                        "ON COMMIT DROP")
            else:
                for column in new:
                    await self.conn.execute(f"ALTER TABLE {staging} ADD COLUMN {q(column)} text")
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
        if not await self._staged_has("auth", "users", "encrypted_password"):
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

    async def _staged_has(self, schema: str, table: str, *columns: str) -> bool:
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
            if await self._staged_has(schema, table, *columns):
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
            f"{q(schema)}.{q(table)}",
        )
        casts = {}
        for row in rows:
            cast = f"s.{q(row['attname'])}::{row['type']}"
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
            f"{q(schema)}.{q(table)}")}
        unmapped = [c for c in staged if c not in target and c not in generated and c not in computed]
        if unmapped and await self.conn.fetchval(f"SELECT count(*) FROM pg_temp.import_{schema}_{table}"):
            self.summary.unmapped_columns[f"{schema}.{table}"] = unmapped
        columns = [c for c in staged if c in target and c not in computed]
        return columns, [target[c] for c in columns]

    async def map_rows(self, schema: str, table: str) -> int:
        columns, values = await self.mapping(schema, table)
        if not columns:
            return 0
        await self.disable_triggers(schema, table)
        try:
            status = await self.conn.execute(
                f"INSERT INTO {q(schema)}.{q(table)} ({', '.join(q(c) for c in columns)}) "
                f"SELECT {', '.join(values)} FROM pg_temp.import_{schema}_{table} s"
            )
        except asyncpg.PostgresError as exc:
            raise ImportFailed(f"the rows of {schema}.{table} do not fit Gatehouse's table: {exc}") from None
        return int(status.rsplit(" ", 1)[1])

    async def map_factors(self) -> int:
        """MFA factors come along, so that no account loses its second factor. Supabase keeps TOTP secrets
        in plain text (unless GOTRUE_SECURITY_DB_ENCRYPTION was on); Gatehouse seals them with its key."""
        if not await self._staged_has("auth", "mfa_factors", "id", "secret"):
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
        await self.disable_triggers("auth", "mfa_factors")
        try:
            status = await self.conn.execute(
                f"INSERT INTO auth.mfa_factors ({', '.join(q(c) for c in columns)}, secret) "
                f"SELECT {', '.join(values)}, c.secret FROM pg_temp.import_auth_mfa_factors s "
                "JOIN unnest($1::text[], $2::text[]) AS c(id, secret) ON c.id = s.id",
                sealed_ids, sealed,
            )
        except asyncpg.PostgresError as exc:
            raise ImportFailed(f"the rows of auth.mfa_factors do not fit Gatehouse's table: {exc}") from None
        return int(status.rsplit(" ", 1)[1])

    # -- triggers -----------------------------------------------------------------------------------------
    async def disable_triggers(self, schema: str, table: str) -> None:
        key = f"{q(schema)}.{q(table)}"
        if key in self.disabled:
            return
        rows = await self.conn.fetch(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal "
            "AND tgenabled <> 'D'", key,
        )
        self.disabled[key] = [(row["tgname"], row["tgenabled"]) for row in rows]
        for name, _mode in self.disabled[key]:
            await self.conn.execute(f"ALTER TABLE {key} DISABLE TRIGGER {q(name)}")

    async def enable_triggers(self) -> None:
        for key, triggers in self.disabled.items():
            for name, mode in triggers:
                await self.conn.execute(f"ALTER TABLE {key} {TRIGGER_MODES.get(mode, 'ENABLE')} TRIGGER {q(name)}")

    # -- the app's statements and rows, in the dump's order -----------------------------------------------
    async def step(self, source: str, step: Step) -> None:
        item = step.item
        sql = item.sql if isinstance(item, Statement) else ""
        if step.action == "skip":
            if isinstance(item, Copy):
                self.summary.skipped_rows[f"{item.schema}.{item.table}"] += item.rows
            else:
                self.summary.skip(step.kind, item.head)
            return
        if step.action == "stage":
            return
        try:
            if step.action == "setting":
                if step.name == "search_path":
                    await self.conn.execute("SET LOCAL search_path = ''")
                else:
                    await self.conn.execute(re.sub(r"^\s*SET\s+", "SET LOCAL ", sql, count=1, flags=re.IGNORECASE))
            elif step.action == "extension":
                await self.extension(step)
            elif step.action == "load":
                await self.disable_triggers(step.schema or "public", step.name or "")
                if isinstance(item, Copy):
                    status = await self.conn.copy_to_table(
                        item.table, schema_name=item.schema, columns=list(item.columns),
                        source=io.BytesIO(item.data.encode("utf-8")), format="text",
                    )
                    self.summary.rows[f"{item.schema}.{item.table}"] += int(status.rsplit(" ", 1)[1])
                else:
                    await self.conn.execute(sql)
                    self.summary.rows[f"{step.schema}.{step.name}"] += 1
            else:
                await self.conn.execute(sql)
                if step.action == "run":
                    self.summary.kept[step.kind] += 1
        except asyncpg.PostgresError as exc:
            hint = ""
            if isinstance(exc, asyncpg.DuplicateObjectError | asyncpg.DuplicateTableError |
                          asyncpg.DuplicateFunctionError | asyncpg.UniqueViolationError):
                hint = STARTER_HINT
            raise ImportFailed(f"{source}, line {item.line}: {item.head}: {exc}. Nothing was imported.{hint}") from None

    async def extension(self, step: Step) -> None:
        name = step.name or ""
        if await self.conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = $1", name):
            self.summary.kept["extension (already there)"] += 1
            return
        available = await self.conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = $1", name)
        if not available and name != "uuid-ossp":
            self.summary.missing_extensions.append(name)
            return
        if step.schema and not await self.conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", step.schema):
            await self.conn.execute(f"CREATE SCHEMA {q(step.schema)}")
            await self.conn.execute(f"GRANT USAGE ON SCHEMA {q(step.schema)} TO anon, authenticated, service_role")
        if available:
            await self.conn.execute(step.item.sql)  # type: ignore[union-attr]
            self.summary.kept["extension"] += 1
            return
        # Supabase installs uuid-ossp everywhere and apps call its uuid_generate_v4(); a PostgreSQL
        # without it (the embedded one) gets that one function, which is what gen_random_uuid() is.
        schema = q(step.schema or "public")
        await self.conn.execute(
            f"CREATE FUNCTION {schema}.uuid_generate_v4() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE "
            f"AS 'SELECT pg_catalog.gen_random_uuid()'; "
            f"GRANT EXECUTE ON FUNCTION {schema}.uuid_generate_v4() TO anon, authenticated, service_role"
        )
        self.summary.kept["uuid_generate_v4() standing in for uuid-ossp"] += 1

    # -- objects and their bytes --------------------------------------------------------------------------
    async def objects(self, files: Path | None, backend: Backend | None, written: list[str]) -> None:
        if not await self._staged_has("storage", "objects", "bucket_id", "name"):
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
        await self.disable_triggers("storage", "objects")
        status = await self.conn.execute(
            f"INSERT INTO storage.objects ({', '.join(q(c) for c in columns)}, version, metadata) "
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

