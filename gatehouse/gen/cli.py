"""``gatehouse gen types``: write the schema's types for TypeScript or Python application code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import asyncpg

from gatehouse.core.config import Settings
from gatehouse.core.keys import KeySet
from gatehouse.gen import python, typescript
from gatehouse.gen.catalog import CatalogError, load_catalog

RENDERERS = {"typescript": typescript.render, "python": python.render}


def add_parser(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
               data_dir_option: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "gen", help="generate code from the database schema",
        description="Generate code from the database schema.",
    )
    actions = parser.add_subparsers(dest="gen_command", metavar="ACTION", required=True)
    types = actions.add_parser(
        "types", help="write the schema's types for supabase-js (TypeScript) or supabase-py (Python)",
        description="Write the tables, views, functions, enums and composite types of the chosen schemas as "
        "types: TypeScript's `Database` type for createClient<Database>() (the Supabase CLI's shape), or "
        "Python TypedDicts (Row / Insert / Update per table). Migrations are applied first.",
    )
    types.add_argument("--lang", choices=sorted(RENDERERS), default="typescript",
                       help="the language to write (default typescript)")
    types.add_argument("--schema", action="append", metavar="NAME",
                       help="a schema to include; repeat it or separate names with commas (default public)")
    types.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (replaced whole) instead of stdout")
    data_dir_option(types)
    return parser


def schemas(values: list[str] | None) -> list[str]:
    """``--schema a --schema b,c`` → ``[a, b, c]``, each once, in order; ``public`` when none is given."""
    names = [name.strip() for value in values or () for name in value.split(",") if name.strip()]
    return list(dict.fromkeys(names)) or ["public"]


def run(args: argparse.Namespace, url: str, keys: KeySet, settings: Settings) -> int:
    text = asyncio.run(generate(url, schemas(args.schema), args.lang))
    if args.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            write_file(args.out, text)
        except OSError as exc:
            raise SystemExit(f"gatehouse: error: cannot write {args.out}: {exc.strerror or exc}") from None
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


async def generate(url: str, schema_names: list[str], lang: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        catalog = await load_catalog(conn, schema_names)
    except CatalogError as exc:
        raise SystemExit(f"gatehouse: error: {exc}") from None
    finally:
        await conn.close()
    return RENDERERS[lang](catalog)


def write_file(path: Path, text: str) -> None:
    """Replace ``path`` whole or not at all: a reader (or a build watching it) never sees half a file."""
    folder = path.parent if str(path.parent) else Path(".")
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, prefix=f".{path.name}.",
                                     delete=False) as handle:
        try:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(handle.name, mode)
    os.replace(handle.name, path)
