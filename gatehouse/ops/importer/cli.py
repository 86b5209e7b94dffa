"""``gatehouse import supabase``: a Supabase project's dump (and bucket files) into this Gatehouse."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from gatehouse.core.config import Settings
from gatehouse.core.keys import KeySet
from gatehouse.ops.importer.report import ImportFailed
from gatehouse.ops.importer.restore import import_supabase, read_dumps

DESCRIPTION = """\
Import a Supabase project: its users (bcrypt password hashes kept, each rehashed
to argon2id at the user's next sign-in), identities, MFA factors, the app's
schemas (tables, types, functions, views, RLS policies, grants, triggers) and
rows, buckets, and objects with their bytes from --files.

Make the dump as Supabase's backup guide shows:
  supabase db dump --db-url "$URL" -f schema.sql
  supabase db dump --db-url "$URL" -f storage.sql --schema storage
  supabase db dump --db-url "$URL" -f data.sql --use-copy --data-only
then:
  gatehouse import supabase --schema schema.sql --schema storage.sql
      --data data.sql --files ./buckets --dry-run

Everything happens in one transaction: any problem (a user or bucket Gatehouse
already has, an unknown password hash, a truncated dump) changes nothing.
What is skipped is listed.
"""


def add_parser(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
               data_dir_option: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "import", help="bring a project from Supabase into Gatehouse",
        description="Bring a project from elsewhere into Gatehouse.",
    )
    sources = parser.add_subparsers(dest="import_source", metavar="SOURCE", required=True)
    supabase = sources.add_parser(
        "supabase", help="a Supabase project's pg_dump (users, identities, app schema and rows, storage)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    supabase.add_argument("dump", type=Path, nargs="?", metavar="FILE",
                          help="one dump holding schema and data (pg_dump of auth, public, storage)")
    supabase.add_argument("--schema", type=Path, action="append", metavar="FILE",
                          help="a schema dump (supabase db dump); repeat it for the storage schema's policies "
                          "(supabase db dump --schema storage)")
    supabase.add_argument("--data", type=Path, metavar="FILE",
                          help="the data dump (supabase db dump --use-copy --data-only)")
    supabase.add_argument("--files", type=Path, metavar="DIR",
                          help="the bucket files, as DIR/<bucket>/<object name> (supabase storage cp -r)")
    supabase.add_argument("--dry-run", action="store_true",
                          help="do it all in a transaction that is rolled back, write no file, print what would change")
    data_dir_option(supabase)
    return parser


def paths(args: argparse.Namespace) -> list[Path]:
    if args.dump is not None and (args.schema or args.data):
        raise ImportFailed("give either one dump FILE or --schema FILE and --data FILE, not both")
    if args.dump is not None:
        return [args.dump]
    if args.schema is None and args.data is None:
        raise ImportFailed("give a dump FILE, or --schema FILE and --data FILE")
    return [*(args.schema or []), *([args.data] if args.data is not None else [])]


def check_files(folder: Path | None) -> None:
    if folder is not None and not folder.is_dir():
        raise ImportFailed(f"--files {folder}: no such folder")


def run(args: argparse.Namespace, url: str, keys: KeySet, settings: Settings) -> int:
    check_files(args.files)
    dumps = read_dumps(paths(args))
    print(import_supabase(settings, url, keys, dumps, args.files, dry_run=args.dry_run).describe())
    return 0
