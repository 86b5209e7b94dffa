"""What the type generators read: the data API's schema cache, plus the types it does not keep.

Tables, columns, keys and functions come from ``gatehouse.rest.schema.SchemaCache``, the same
reading of the catalog the data API serves from, so the generated types describe exactly what
``/rest/v1`` exposes. The generators also need every type those refer to by oid (enums with their
labels, composite types with their attributes, arrays, domains), read here in the same snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gatehouse.core.db import Conn
from gatehouse.rest.schema import SchemaCache, TableInfo

# Every type, with what the generators need to name it. An array is a varlena type with an element
# type (fixed-length types such as `point` also have one, and are not arrays).
_TYPES = """
SELECT t.oid, n.nspname AS schema, t.typname AS name, t.typtype::text AS kind,
       CASE WHEN t.typlen = -1 AND t.typelem <> 0 THEN t.typelem ELSE 0 END AS element,
       t.typbasetype AS base, coalesce(c.relkind::text, '') AS relation_kind,
       ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) AS labels
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
"""

# Stand-alone composite types (CREATE TYPE ... AS (...)) of the chosen schemas, attribute by attribute.
_COMPOSITE_ATTRIBUTES = """
SELECT n.nspname AS schema, t.typname AS type, a.attname AS name, a.atttypid AS type_oid
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
JOIN pg_class c ON c.oid = t.typrelid AND c.relkind = 'c'
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = ANY($1::text[])
ORDER BY n.nspname, t.typname, a.attnum
"""

_SCHEMAS = "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])"


class CatalogError(Exception):
    """The catalog cannot be read as asked (a schema that does not exist)."""


@dataclass(frozen=True)
class PgType:
    oid: int
    schema: str
    name: str
    kind: str  # pg_type.typtype: b base, c composite, d domain, e enum, p pseudo, r range, m multirange
    element: int  # an array's element type, else 0
    base: int  # a domain's base type, else 0
    relation_kind: str  # for a row type: pg_class.relkind of its relation ('r', 'v', 'c', ...), else ''
    labels: tuple[str, ...]  # an enum's labels, in their sort order


@dataclass(frozen=True)
class CompositeType:
    schema: str
    name: str
    attributes: tuple[tuple[str, int], ...]  # (name, type oid), in attribute order


@dataclass(frozen=True)
class Catalog:
    """One consistent reading of the schemas to generate types for."""

    schemas: tuple[str, ...]
    cache: SchemaCache
    types: dict[int, PgType]
    composites: tuple[CompositeType, ...]

    def resolve(self, oid: int) -> PgType | None:
        """The type, seen through any domains to the type underneath."""
        seen: set[int] = set()
        found = self.types.get(oid)
        while found is not None and found.kind == "d" and found.base and found.oid not in seen:
            seen.add(found.oid)
            found = self.types.get(found.base)
        return found

    def enums(self, schema: str) -> list[PgType]:
        """The schema's enum types, by name."""
        return sorted((t for t in self.types.values() if t.kind == "e" and t.schema == schema), key=lambda t: t.name)

    def composite_types(self, schema: str) -> list[CompositeType]:
        return [c for c in self.composites if c.schema == schema]

    def tables(self, schema: str) -> list[TableInfo]:
        """Tables, partitioned and foreign tables: what the generators put under ``Tables``."""
        return [t for t in self.cache.tables(schema) if t.kind in ("table", "partitioned_table", "foreign_table")]

    def views(self, schema: str) -> list[TableInfo]:
        """Views and materialized views: what the generators put under ``Views``."""
        return [t for t in self.cache.tables(schema) if t.kind in ("view", "materialized_view")]


async def load_catalog(conn: Conn, schemas: Sequence[str]) -> Catalog:
    """Read ``schemas`` (which must all exist) in one read-only snapshot."""
    names = list(dict.fromkeys(schemas))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        found = {row["nspname"] for row in await conn.fetch(_SCHEMAS, names)}
        missing = [name for name in names if name not in found]
        if missing:
            raise CatalogError(f"no schema named {', '.join(missing)} in the database")
        cache = await SchemaCache.load(conn, tuple(names))
        type_rows = await conn.fetch(_TYPES)
        attribute_rows = await conn.fetch(_COMPOSITE_ATTRIBUTES, names)
    types = {
        row["oid"]: PgType(
            oid=row["oid"], schema=row["schema"], name=row["name"], kind=row["kind"], element=row["element"],
            base=row["base"], relation_kind=row["relation_kind"], labels=tuple(row["labels"]),
        )
        for row in type_rows
    }
    attributes: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for row in attribute_rows:
        attributes.setdefault((row["schema"], row["type"]), []).append((row["name"], row["type_oid"]))
    composites = tuple(
        CompositeType(schema=schema, name=name, attributes=tuple(attrs))
        for (schema, name), attrs in sorted(attributes.items())
    )
    return Catalog(schemas=tuple(names), cache=cache, types=types, composites=composites)
