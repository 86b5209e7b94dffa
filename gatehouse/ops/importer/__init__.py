"""Bring a project from elsewhere into Gatehouse: ``gatehouse import supabase`` reads a Supabase
project's pg_dump (and, optionally, its bucket files) and restores it in one transaction."""

from __future__ import annotations

from gatehouse.ops.importer.report import ImportFailed, Summary
from gatehouse.ops.importer.restore import Dump, import_supabase, read_dumps

__all__ = ["Dump", "ImportFailed", "Summary", "import_supabase", "read_dumps"]
