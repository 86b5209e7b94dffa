"""What becomes of each part of a Supabase dump: run as it is, staged and mapped, or skipped (and said so).

The rules, in one place:

* the app's schemas (``public`` and any schema the project made itself) come in whole: tables,
  types, functions, views, policies, triggers, grants to ``anon``/``authenticated``/``service_role``,
  comments, sequences and their values, and their rows;
* Supabase's own ``auth`` and ``storage`` schemas are *not* run: Gatehouse has its own tables of
  the same names. Their rows are staged instead (``users``, ``identities``, ``mfa_factors``,
  ``buckets``, ``objects``) and mapped column by column (``restore.py``). Kept from them: the app's policies
  on ``storage.objects``/``storage.buckets`` and the app's triggers on ``auth.users``;
* everything else is skipped and counted by kind: Supabase's internal schemas (graphql, realtime,
  vault, pgsodium, supabase_functions, ...), their extensions, ownership, roles, grants to
  roles Gatehouse does not have, default privileges, publications, event triggers, ``DROP``
  statements from ``--clean`` (nothing in Gatehouse is ever dropped by an import), session settings.

Everything here is pure: ``classify`` looks at one item and names a ``Step``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Literal

from gatehouse.ops.importer.dump import Copy, DumpError, Item, Meta, Statement, Token, tokens

__all__ = ["INTERNAL_SCHEMAS", "REQUEST_ROLES", "STAGED", "Step", "classify", "implied_extensions", "staged_insert"]

#: Schemas that Supabase's platform owns; nothing in them is the app's.
INTERNAL_SCHEMAS = frozenset({
    "auth", "storage", "extensions", "graphql", "graphql_public", "realtime", "_realtime", "supabase_functions",
    "supabase_migrations", "vault", "pgsodium", "pgsodium_masks", "pgbouncer", "net", "cron", "_analytics",
    "pgtle", "_supavisor", "pg_catalog", "information_schema", "tiger", "tiger_data", "topology", "pg_toast",
    "supabase_admin",
})

#: Supabase tables whose rows Gatehouse maps into its own tables of the same name.
STAGED = frozenset({
    ("auth", "users"), ("auth", "identities"), ("auth", "mfa_factors"), ("storage", "buckets"), ("storage", "objects"),
})

#: The roles a grant may name and still be run (Gatehouse has them, as Supabase does).
REQUEST_ROLES = frozenset({"anon", "authenticated", "service_role", "public"})

#: Extensions that only Supabase's platform provides, or that Gatehouse replaces.
PLATFORM_EXTENSIONS = frozenset({
    "pg_graphql", "pgsodium", "supabase_vault", "pg_net", "pg_stat_statements", "pgjwt", "pg_cron", "pgaudit",
    "plpgsql", "pg_stat_monitor", "supautils", "wrappers", "pg_tle", "index_advisor", "hypopg", "plpgsql_check",
})

#: Functions apps call as ``extensions.name()``, Supabase's default extensions: a dump of the app's schemas
#: calls them without creating their extension, which lives in the (platform's) ``extensions`` schema.
EXTENSION_FUNCTIONS = {
    **dict.fromkeys(("uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v3", "uuid_generate_v4",
                     "uuid_generate_v5", "uuid_nil", "uuid_ns_dns", "uuid_ns_url"), "uuid-ossp"),
    **dict.fromkeys(("crypt", "gen_salt", "gen_random_bytes", "digest", "hmac", "pgp_sym_encrypt",
                     "pgp_sym_decrypt", "armor", "dearmor"), "pgcrypto"),
}

#: Session settings of a dump that matter for running it, set LOCAL to the import's transaction.
LOCAL_SETTINGS = frozenset({"check_function_bodies", "xmloption"})

#: The commands a pg_dump file is made of; a statement starting otherwise means it is not one.
COMMANDS = frozenset({
    "create", "alter", "set", "reset", "select", "copy", "insert", "grant", "revoke", "comment", "drop",
    "security", "refresh",
})

Action = Literal["run", "skip", "stage", "load", "setting", "extension", "sequence"]


@dataclass(frozen=True)
class Step:
    """``run`` a statement; ``load`` rows into an app table; ``stage`` Supabase auth/storage rows for
    mapping; ``setting`` to set LOCAL; ``extension`` to create if this PostgreSQL has it; ``sequence``
    a setval; ``skip`` (``kind`` says why, for the summary)."""

    action: Action
    item: Item
    kind: str
    schema: str | None = None
    name: str | None = None


def classify(item: Item) -> Step:
    if isinstance(item, Meta):
        return Step("skip", item, "psql meta-command (\\restrict …)")
    if isinstance(item, Copy):
        return _rows(item, item.schema, item.table)
    return _statement(item, tokens(item.sql))


def _rows(item: Copy | Statement, schema: str, table: str) -> Step:
    if (schema, table) in STAGED:
        return Step("stage", item, f"{schema}.{table}", schema, table)
    if schema in INTERNAL_SCHEMAS:
        return Step("skip", item, f"rows of Supabase's {schema} schema", schema, table)
    return Step("load", item, "rows", schema, table)


def _words(toks: list[Token], count: int) -> list[str]:
    return [t.value for t in toks[:count] if t.kind == "word"]


def _qualified(toks: list[Token], start: int = 0) -> tuple[str, str] | None:
    """The first ``schema.name`` from ``start`` on (``pg_catalog.`` names, being built-ins, are passed over)."""
    for i in range(start, len(toks) - 2):
        a, dot, b = toks[i], toks[i + 1], toks[i + 2]
        if a.kind in ("word", "quoted") and dot.value == "." and b.kind in ("word", "quoted"):
            if a.value == "pg_catalog":
                continue
            return a.value, b.value
    return None


def _after(toks: list[Token], word: str) -> int:
    for i, token in enumerate(toks):
        if token.kind == "word" and token.value == word:
            return i + 1
    return len(toks)


def _statement(item: Statement, toks: list[Token]) -> Step:
    if not toks or toks[0].kind != "word" or toks[0].value not in COMMANDS:
        raise DumpError(f"line {item.line} holds no SQL statement ({item.head!r}): not a pg_dump file")
    first = toks[0].value
    words = _words(toks, 6)
    if first in ("set", "reset"):
        return _setting(item, toks)
    if first == "select":
        return _select(item, toks)
    if first == "insert":
        target = _qualified(toks)
        if target is None:
            raise DumpError(f"the INSERT on line {item.line} names no schema-qualified table")
        return _rows(item, *target)
    if first == "drop":
        return Step("skip", item, "DROP from --clean (an import never drops what Gatehouse has)")
    if first == "comment" and len(words) > 2 and words[2] in ("extension", "schema"):
        about = toks[3].value if len(toks) > 3 else ""
        if words[2] == "schema" and about not in INTERNAL_SCHEMAS and about != "public":
            return Step("run", item, "comment")
        return Step("skip", item, f"comment on a {words[2]} Supabase manages")
    if first in ("create", "alter") and len(words) > 1 and words[1] in ("role", "user", "group"):
        return Step("skip", item, "role (Gatehouse has its own: anon, authenticated, service_role)")
    if first == "alter" and "owner" in _words(toks, len(toks)) and _owner_to(toks):
        return Step("skip", item, "ALTER … OWNER TO (imported objects belong to Gatehouse's role)")
    if words[:3] == ["alter", "default", "privileges"]:
        return Step("skip", item, "ALTER DEFAULT PRIVILEGES (Gatehouse's own defaults apply)")
    if "publication" in words[:3]:
        return _publication(item, toks)
    if words[1:3] == ["event", "trigger"]:
        return Step("skip", item, "event trigger (Supabase platform hooks)")
    if words[:2] == ["create", "extension"]:
        name = toks[_after(toks, "exists") if words[2:4] == ["if", "not"] else 2].value
        if name in PLATFORM_EXTENSIONS:
            return Step("skip", item, "extension of Supabase's platform (pg_graphql, pgsodium, vault, …)")
        schema_at = _after(toks, "schema")
        schema = toks[schema_at].value if schema_at < len(toks) else None
        return Step("extension", item, "extension", schema, name)
    if first in ("create", "alter") and len(words) > 1 and words[1] == "schema":
        name = toks[_after(toks, "exists") if words[2:4] == ["if", "not"] else 2].value
        if name in INTERNAL_SCHEMAS or name == "public":
            return Step("skip", item, "schema Supabase manages (or public, which Gatehouse has)")
        return Step("run", item, "schema", name)
    if first in ("grant", "revoke"):
        return _grant(item, toks)
    target = _qualified(toks)
    kind = _kind(toks)
    if target is None:
        return Step("skip", item, f"statement outside the app's schemas ({' '.join(words[:3]).upper()})")
    schema, name = target
    if kind == "trigger" and (schema, name) == ("auth", "users"):
        function = _qualified(toks, _after(toks, "execute"))
        if function is not None and function[0] not in INTERNAL_SCHEMAS:
            return Step("run", item, "trigger on auth.users", schema, name)
    if kind in ("policy", "row level security") and schema == "storage" and name in ("objects", "buckets"):
        if kind == "policy":
            return Step("run", item, "storage policy", schema, name)
        return Step("skip", item, "storage's own settings (Gatehouse's storage schema has them)", schema, name)
    if schema in INTERNAL_SCHEMAS:
        return Step("skip", item, f"object in Supabase's {_group(schema)} schema", schema, name)
    if kind == "policy" and not _policy_roles(toks) <= REQUEST_ROLES:
        return Step("skip", item, "policy for a role Gatehouse does not have (supabase_auth_admin, …)", schema, name)
    return Step("run", item, kind, schema, name)


def _publication(item: Statement, toks: list[Token]) -> Step:
    """Gatehouse's realtime reads the ``supabase_realtime`` publication as Supabase's does: the tables the
    app added to it are added again; the publication itself is Gatehouse's (made by its migrations)."""
    words = _words(toks, 6)
    name = toks[2].value if len(toks) > 2 else ""
    if words[:2] == ["alter", "publication"] and name == "supabase_realtime" and words[2:4] in (["add", "table"],):
        target = _qualified(toks)
        if target is not None and target[0] not in INTERNAL_SCHEMAS:
            return Step("run", item, "realtime table (supabase_realtime)", *target)
    if name == "supabase_realtime":
        return Step("skip", item, "publication supabase_realtime itself (Gatehouse has its own)")
    return Step("skip", item, "publication other than supabase_realtime (logical replication elsewhere)")


def _group(schema: str) -> str:
    return schema if schema in ("auth", "storage") else "internal"


def _policy_roles(toks: list[Token]) -> set[str]:
    """The roles after ``TO`` in a CREATE POLICY (none: the policy is for PUBLIC)."""
    roles: set[str] = set()
    at = _after(toks, "to")
    for token in toks[at:]:
        if token.kind == "word" and token.value in ("using", "with"):
            break
        if token.kind in ("word", "quoted"):
            roles.add(token.value)
    return roles


def _owner_to(toks: list[Token]) -> bool:
    return any(a.kind == b.kind == "word" and a.value == "owner" and b.value == "to" for a, b in itertools.pairwise(toks))


_KINDS = (
    (("create", "table"), "table"), (("create", "unlogged", "table"), "table"), (("create", "view"), "view"),
    (("create", "materialized", "view"), "view"), (("create", "or", "replace", "view"), "view"),
    (("create", "function"), "function"), (("create", "or", "replace", "function"), "function"),
    (("create", "procedure"), "function"), (("create", "or", "replace", "procedure"), "function"),
    (("create", "type"), "type"), (("create", "domain"), "type"), (("create", "sequence"), "sequence"),
    (("alter", "sequence"), "sequence"), (("create", "index"), "index"), (("create", "unique", "index"), "index"),
    (("create", "trigger"), "trigger"), (("create", "or", "replace", "trigger"), "trigger"),
    (("create", "constraint", "trigger"), "trigger"), (("create", "policy"), "policy"),
    (("comment", "on"), "comment"), (("create", "aggregate"), "function"),
)


def _kind(toks: list[Token]) -> str:
    words = tuple(_words(toks, 5))
    for prefix, kind in _KINDS:
        if words[: len(prefix)] == prefix:
            return kind
    flat = [t.value for t in toks if t.kind == "word"]
    if words[:2] == ("alter", "table"):
        if "row" in flat and "level" in flat and "security" in flat:
            return "row level security"
        if "constraint" in flat:
            return "constraint"
        return "table change"
    return " ".join(words[:2])


def _grant(item: Statement, toks: list[Token]) -> Step:
    on = _after(toks, "on")
    if on >= len(toks):
        return Step("skip", item, "role membership (Gatehouse has its own roles)")
    positions = [i for i in (_after(toks, "to"), _after(toks, "from")) if i < len(toks)]
    grantee = toks[min(positions)].value if positions else ""
    object_kind = toks[on].value if toks[on].kind == "word" else ""
    if object_kind == "schema":
        schema: str | None = toks[on + 1].value if on + 1 < len(toks) else None
        if schema == "public":
            return Step("skip", item, "grant on the public schema itself (Gatehouse sets its own)")
    else:
        target = _qualified(toks, on)
        schema = target[0] if target else None
    if schema is None or schema in INTERNAL_SCHEMAS:
        return Step("skip", item, "grant on an object Supabase manages")
    if grantee not in REQUEST_ROLES:
        return Step("skip", item, "grant to a role Gatehouse does not have (postgres, supabase_admin, …)")
    return Step("run", item, "grant", schema)


_SET = re.compile(r"^\s*(?:SET|RESET)\s+(?:SESSION\s+|LOCAL\s+)?(\w+)\s*(?:=|TO)?\s*(.*)$", re.IGNORECASE | re.DOTALL)


def _setting(item: Statement, toks: list[Token]) -> Step:
    match = _SET.match(item.sql)
    name = match.group(1).lower() if match else ""
    value = match.group(2).strip().strip("'").lower() if match else ""
    if name == "standard_conforming_strings" and value not in ("on", "true"):
        raise DumpError(f"line {item.line}: dumps with standard_conforming_strings = off are not supported")
    if name == "client_encoding" and value.replace("-", "") not in ("utf8", "unicode"):
        raise DumpError(f"line {item.line}: the dump is in {value}; make it again in UTF8 (pg_dump -E UTF8)")
    if toks[0].value == "set" and name in LOCAL_SETTINGS:
        return Step("setting", item, "setting", name=name)
    return Step("skip", item, "session setting (SET …, RESET ALL)", name=name)


def _select(item: Statement, toks: list[Token]) -> Step:
    values = [t.value for t in toks[:5]]
    if values[1:4] == ["pg_catalog", ".", "set_config"] and "search_path" in item.sql:
        return Step("setting", item, "setting", name="search_path")
    if values[1:4] == ["pg_catalog", ".", "setval"] and len(toks) > 5 and toks[5].kind == "string":
        quoted = toks[5].value[1:-1].replace("''", "'")
        inner = tokens(quoted)
        target = _qualified(inner)
        schema = target[0] if target else "public"
        if schema in INTERNAL_SCHEMAS:
            return Step("skip", item, f"sequence value in Supabase's {_group(schema)} schema", schema)
        return Step("sequence", item, "sequence value", schema, target[1] if target else None)
    raise DumpError(f"line {item.line} runs a query a pg_dump file does not hold ({item.head!r})")


_INSERT_TARGET = re.compile(r"^(\s*INSERT\s+INTO\s+)(\S+?\s*\.\s*\S+?)(\s*\()", re.IGNORECASE)


def staged_insert(sql: str, staging: str) -> str:
    """``INSERT INTO "auth"."users" (...) VALUES (...)`` aimed at the staging table instead."""
    match = _INSERT_TARGET.match(sql)
    if match is None:
        raise DumpError(f"cannot read the INSERT {sql[:60]!r}")
    return match.group(1) + staging + sql[match.end(2):]


def implied_extensions(steps: list[Step]) -> list[str]:
    """Extensions the statements to run call into ``extensions.`` for, and that the dump does not create."""
    created = {step.name for step in steps if step.action == "extension"}
    found: list[str] = []
    for step in steps:
        if step.action != "run" or not isinstance(step.item, Statement):
            continue
        toks = tokens(step.item.sql)
        for a, dot, b in zip(toks, toks[1:], toks[2:], strict=False):
            if a.value == "extensions" and dot.value == "." and b.value in EXTENSION_FUNCTIONS:
                name = EXTENSION_FUNCTIONS[b.value]
                if name not in created and name not in found:
                    found.append(name)
    return found
