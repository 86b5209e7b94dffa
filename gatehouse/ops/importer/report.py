"""What an import did, or (dry run) would do: counts, what was skipped and why, what was left out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["ImportFailed", "Summary"]


class ImportFailed(Exception):
    """The import stopped and changed nothing (the message says why and what to do)."""


def _few(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", … ({len(values) - limit} more)" if len(values) > limit else "")


@dataclass
class Summary:
    dry_run: bool
    users: int = 0
    identities: int = 0
    factors: int = 0
    buckets: int = 0
    objects: int = 0
    bytes: int = 0
    kept: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_examples: dict[str, str] = field(default_factory=dict)
    skipped_rows: Counter[str] = field(default_factory=Counter)
    unmapped_columns: dict[str, list[str]] = field(default_factory=dict)
    missing_extensions: list[str] = field(default_factory=list)
    objects_without_file: list[str] = field(default_factory=list)
    objects_refused: list[str] = field(default_factory=list)
    files_without_row: list[str] = field(default_factory=list)
    files_given: bool = False

    def skip(self, kind: str, example: str) -> None:
        self.skipped[kind] += 1
        self.skipped_examples.setdefault(kind, example)

    def describe(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        lines = [
            ("Dry run: nothing was changed. " if self.dry_run else "")
            + f"Supabase import {verb}: {self.users} users, {self.identities} identities, "
            f"{self.factors} MFA factors, {self.buckets} buckets, {self.objects} objects ({self.bytes} bytes)."
        ]
        if self.kept:
            lines.append("Schema: " + ", ".join(f"{count} {kind}" for kind, count in sorted(self.kept.items())))
        if self.rows:
            lines.append("Rows:")
            lines += [f"  {table}: {count}" for table, count in sorted(self.rows.items())]
        if self.unmapped_columns:
            lines.append("Supabase columns Gatehouse has no place for (left out):")
            lines += [f"  {table}: {', '.join(cols)}" for table, cols in sorted(self.unmapped_columns.items())]
        if self.skipped or any(self.skipped_rows.values()):
            lines.append("Skipped:")
            for kind, count in sorted(self.skipped.items()):
                lines.append(f"  {count} × {kind}  (e.g. {self.skipped_examples[kind]})")
            for table, count in sorted(self.skipped_rows.items()):
                if count:
                    lines.append(f"  {count} row(s) of {table} (Supabase's own; Gatehouse keeps its own)")
        if self.missing_extensions:
            lines.append("Extensions this PostgreSQL does not have (not created): "
                         + ", ".join(self.missing_extensions))
        if (self.objects or self.buckets) and not self.kept["storage policy"]:
            lines.append("No policies on storage.objects came with the dump (`supabase db dump` leaves the storage "
                         "schema out): only the service role reaches the objects until you add them; dump them with "
                         "`supabase db dump -f storage.sql --schema storage` and import that with --schema.")
        if self.objects_without_file:
            why = "no file in --files" if self.files_given else "no --files folder given"
            lines.append(f"Objects left out ({why}): {len(self.objects_without_file)}: "
                         + _few(self.objects_without_file))
        if self.objects_refused:
            lines.append(f"Objects refused: {len(self.objects_refused)}: " + _few(self.objects_refused))
        if self.files_without_row:
            lines.append(f"Files with no object row (not imported): {len(self.files_without_row)}: "
                         + _few(self.files_without_row))
        return "\n".join(lines)
