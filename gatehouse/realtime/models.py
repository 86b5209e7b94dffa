"""A database change as the feed delivers it, and its upstream (Supabase Realtime) wire shape."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

ChangeType = Literal["INSERT", "UPDATE", "DELETE"]

#: Upstream's error for a row that cannot be identified (and so cannot be checked under RLS).
NO_PRIMARY_KEY = "Error 400: Bad Request, no primary key"


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the changed table: its name and PostgreSQL type name (``int4``, ``text``, ``uuid``...)."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Change:
    """One committed row change of a published table.

    ``record`` is the new row (empty for DELETE); ``old_record`` the old one (empty for INSERT):
    the whole old row when the table's REPLICA IDENTITY is FULL (``old_full``), else its primary
    key columns. ``primary_key`` holds the row's key values (new ones for INSERT and UPDATE, old
    ones for DELETE), empty for a table without a primary key. ``columns`` are the table's
    columns when the change was read. ``id`` is the queue's id: increasing, not gapless, and
    only ordered like commits for changes to the same row.
    """

    id: int
    schema: str
    table: str
    type: ChangeType
    commit_timestamp: str
    columns: tuple[Column, ...]
    record: Mapping[str, Any]
    old_record: Mapping[str, Any]
    old_full: bool
    primary_key: Mapping[str, Any]

    @property
    def row(self) -> Mapping[str, Any]:
        """The row filters look at: the new record, or the old one for a DELETE."""
        return self.old_record if self.type == "DELETE" else self.record

    def data(self, *, hidden_columns: Collection[str] = (), row_security: bool = False) -> dict[str, Any]:
        """The change as upstream sends it in a ``postgres_changes`` message's ``data``.

        ``hidden_columns`` (the subscriber's role may not read them) are left out of the
        columns and records. ``row_security``: RLS applies to the subscriber, so a DELETE's old
        record is cut to its primary key (the deleted row cannot be checked against the
        policies), as upstream does. ``realtime.visible_to`` answers both per subscriber.
        """
        hidden = frozenset(hidden_columns)
        shown = [{"name": c.name, "type": c.type} for c in self.columns if c.name not in hidden]
        data: dict[str, Any] = {
            "schema": self.schema,
            "table": self.table,
            "commit_timestamp": self.commit_timestamp,
            "type": self.type,
            "columns": shown,
            "errors": None,
        }
        if not self.primary_key and self.type != "DELETE":
            data["errors"] = [NO_PRIMARY_KEY]
            data["record"] = {}
            if self.type == "UPDATE":
                data["old_record"] = {}
            return data
        if self.type != "DELETE":
            data["record"] = _without(self.record, hidden)
        if self.type != "INSERT":
            old = self.old_record
            if self.type == "DELETE" and row_security:
                old = {name: value for name, value in old.items() if name in self.primary_key}
            data["old_record"] = _without(old, hidden)
        return data


def _without(row: Mapping[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name not in hidden}
