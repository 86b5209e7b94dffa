"""Run a Supabase dump into Gatehouse's database: one transaction, all or nothing.

Why not psql into a staging database and copy across: the dump is run here, statement by
statement, on one asyncpg connection inside one transaction, so a failure anywhere (a conflict,
a bad hash, a statement Gatehouse's PostgreSQL refuses, a missing file) leaves no trace, and a
dry run is the same run rolled back. It needs no second database and works the same against the
embedded PostgreSQL and an external ``GATEHOUSE_DATABASE_URL``.

Order: Supabase's ``auth.users``, ``auth.identities``, ``auth.mfa_factors`` and ``storage.buckets`` rows are staged
(temporary tables of text columns, filled by COPY) and mapped into Gatehouse's tables first, so
that the app's rows referencing users load whatever order the dump has; then the app's
statements and rows run in the dump's order; then objects, whose bytes go to the storage backend
(written before the commit and removed again if it does not happen). User triggers of the tables
being loaded are disabled for the load and enabled again before the commit, as a data-only
restore does, so that, for one, a profile-creating trigger does not collide with the dumped profiles.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from gatehouse.auth.mfa.totp import SecretBox
from gatehouse.core.config import Settings
from gatehouse.core.keys import KeySet
from gatehouse.ops.importer.dump import Copy, DumpError, Statement, split
from gatehouse.ops.importer.mapping import STARTER_HINT, Mapper, Triggers
from gatehouse.ops.importer.plan import Step, classify, implied_extensions
from gatehouse.ops.importer.report import ImportFailed, Summary
from gatehouse.rest.sqlgen import ident
from gatehouse.storage.backends import Backend, create_backend

__all__ = ["Dump", "import_supabase", "read_dumps"]


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


def import_supabase(settings: Settings, url: str, keys: KeySet, dumps: list[Dump], files: Path | None, *,
                    dry_run: bool) -> Summary:
    return asyncio.run(_import(settings, url, keys, dumps, files, dry_run=dry_run))


async def _import(settings: Settings, url: str, keys: KeySet, dumps: list[Dump], files: Path | None, *,
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
        self.triggers = Triggers(conn)
        self.rows = Mapper(conn, summary, box, self.triggers)

    async def everything(self, dumps: list[Dump], files: Path | None, backend: Backend | None,
                         written: list[str]) -> None:
        staged: dict[tuple[str, str], list[Copy | Statement]] = defaultdict(list)
        for dump in dumps:
            for step in dump.steps:
                if step.action == "stage":
                    staged[(step.schema or "", step.name or "")].append(step.item)  # type: ignore[arg-type]
        for schema, table in (("auth", "users"), ("auth", "identities"), ("auth", "mfa_factors"), ("storage", "buckets"),
                              ("storage", "objects")):
            await self.rows.stage(schema, table, staged.get((schema, table), []))
        await self.rows.check_hashes()
        await self.rows.check_conflicts()
        self.summary.users = await self.rows.map_rows("auth", "users")
        self.summary.identities = await self.rows.map_rows("auth", "identities")
        self.summary.factors = await self.rows.map_factors()
        self.summary.buckets = await self.rows.map_rows("storage", "buckets")
        for name in implied_extensions([step for dump in dumps for step in dump.steps]):
            sql = f"CREATE EXTENSION IF NOT EXISTS {ident(name)} WITH SCHEMA extensions"
            await self.extension(Step("extension", Statement(sql, 0), "extension", "extensions", name))
        for dump in dumps:
            for step in dump.steps:
                await self.step(dump.name, step)
        await self.rows.objects(files, backend, written)
        await self.triggers.enable()

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
                await self.triggers.disable(step.schema or "public", step.name or "")
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
            await self.conn.execute(f"CREATE SCHEMA {ident(step.schema)}")
            await self.conn.execute(f"GRANT USAGE ON SCHEMA {ident(step.schema)} TO anon, authenticated, service_role")
        if available:
            await self.conn.execute(step.item.sql)  # type: ignore[union-attr]
            self.summary.kept["extension"] += 1
            return
        # Supabase installs uuid-ossp everywhere and apps call its uuid_generate_v4(); a PostgreSQL
        # without it (the embedded one) gets that one function, which is what gen_random_uuid() is.
        schema = ident(step.schema or "public")
        await self.conn.execute(
            f"CREATE FUNCTION {schema}.uuid_generate_v4() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE "
            f"AS 'SELECT pg_catalog.gen_random_uuid()'; "
            f"GRANT EXECUTE ON FUNCTION {schema}.uuid_generate_v4() TO anon, authenticated, service_role"
        )
        self.summary.kept["uuid_generate_v4() standing in for uuid-ossp"] += 1
