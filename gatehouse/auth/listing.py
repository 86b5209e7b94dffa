"""Searching and paging through users for administrators: keyset pages, filters, figures.

``AdminService.list_users`` pages by OFFSET, as GoTrue's admin API must (``?page=N``); a deep
OFFSET reads every row it skips. The dashboard pages by key instead: a page is "the next N users
before (created_at, id) = cursor", newest first, which reads ``users_listed_idx``
(0018_scale_indexes.sql: ``(created_at, id) WHERE deleted_at IS NULL``) backwards from the
cursor and stops after N + 1 entries, whatever the page's depth. Filters and search text are
checked on the rows the index hands over; a rare match may read many rows before it fills a page
(at most the whole index once), but never sorts.

Everything a caller sends (search text, cursor) is bound as a parameter; only fixed SQL
fragments chosen here are put together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from gatehouse.auth import users
from gatehouse.auth.models import User
from gatehouse.core.errors import GatehouseError

__all__ = ["FILTERS", "Cursor", "UserPage", "UserQuery", "bad_cursor"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SEARCH = 200
MAX_PAGE_SIZE = 200

#: The filters by name, each a fixed condition on ``u`` (an ``auth.users`` row).
FILTERS: Final = {
    "unconfirmed": "u.email_confirmed_at IS NULL AND NOT u.is_anonymous",
    "banned": "u.banned_until > now()",
    "anonymous": "u.is_anonymous",
    "mfa": "EXISTS (SELECT 1 FROM auth.mfa_factors f WHERE f.user_id = u.id AND f.status = 'verified')",
}


def bad_cursor() -> GatehouseError:
    return GatehouseError("validation_failed", "The page cursor is not one this server made", status=400)


@dataclass(frozen=True)
class Cursor:
    """A position in the newest-first order: a user's ``created_at`` (None when the column is
    NULL: such users come first, as the index read backwards gives them) and id."""

    created_at: datetime | None
    id: uuid.UUID

    def encode(self) -> str:
        micros = "-" if self.created_at is None else str((self.created_at - _EPOCH) // timedelta(microseconds=1))
        return f"{micros}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        micros, _, raw_id = text.partition(".")
        try:
            user_id = uuid.UUID(raw_id)
            if micros == "-":
                return cls(None, user_id)
            if not micros.lstrip("-").isdigit() or len(micros) > 20:
                raise ValueError(micros)
            return cls(_EPOCH + timedelta(microseconds=int(micros)), user_id)
        except (ValueError, OverflowError):
            raise bad_cursor() from None


@dataclass(frozen=True)
class UserQuery:
    """What an administrator asked for: search text, filters, a page size and where to start
    (``after``: the page following that cursor; ``before``: the page preceding it)."""

    search: str = ""
    filters: frozenset[str] = frozenset()
    limit: int = 50
    after: Cursor | None = None
    before: Cursor | None = None

    def __post_init__(self) -> None:
        if len(self.search) > MAX_SEARCH or "\x00" in self.search:
            raise GatehouseError("validation_failed", f"Search at most {MAX_SEARCH} characters", status=400)
        unknown = self.filters - FILTERS.keys()
        if unknown:
            raise GatehouseError("validation_failed", f"Unknown filter {min(unknown)!r}", status=400)
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise GatehouseError("validation_failed", f"A page holds 1 to {MAX_PAGE_SIZE} users", status=400)
        if self.after is not None and self.before is not None:
            raise GatehouseError("validation_failed", "Give after or before, not both", status=400)


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    #: Cursors of the neighbouring pages, None where there is none.
    next: str | None = None
    previous: str | None = None
    filters: frozenset[str] = field(default_factory=frozenset)


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, its wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _position(cursor: Cursor, args: list[Any], *, older: bool) -> str:
    """Rows strictly after ``cursor`` in newest-first order (``older``) or strictly before it.

    The order is (created_at DESC NULLS FIRST, id DESC): ``users_listed_idx`` read backwards.
    """
    args.append(cursor.id)
    at_id = f"${len(args)}"
    if cursor.created_at is None:
        if older:
            return f"(u.created_at IS NULL AND u.id < {at_id} OR u.created_at IS NOT NULL)"
        return f"(u.created_at IS NULL AND u.id > {at_id})"
    args.append(cursor.created_at)
    at_time = f"${len(args)}"
    if older:
        return f"(u.created_at, u.id) < ({at_time}, {at_id})"
    return f"(u.created_at IS NULL OR (u.created_at, u.id) > ({at_time}, {at_id}))"


def page_sql(query: UserQuery) -> tuple[str, list[Any]]:
    """The statement for one page (one row more than asked, to know whether more follow)."""
    args: list[Any] = []
    conditions = ["u.deleted_at IS NULL"]
    text = query.search.strip()
    if text:
        try:
            args.append(uuid.UUID(text))
            conditions.append(f"u.id = ${len(args)}")
        except ValueError:
            args.append(_like(text))
            at = f"${len(args)}"
            conditions.append(f"(u.email ILIKE {at} OR u.raw_user_meta_data::text ILIKE {at} "
                              f"OR u.raw_app_meta_data::text ILIKE {at})")
    conditions += [f"({FILTERS[name]})" for name in sorted(query.filters)]
    backwards = query.before is not None
    if query.after is not None:
        conditions.append(_position(query.after, args, older=True))
    elif query.before is not None:
        conditions.append(_position(query.before, args, older=False))
    order = "u.created_at ASC NULLS LAST, u.id ASC" if backwards else "u.created_at DESC NULLS FIRST, u.id DESC"
    args.append(query.limit + 1)
    sql = f"""
SELECT u.*, {users.IDENTITIES}, {users.FACTORS}
FROM auth.users u
WHERE {' AND '.join(conditions)}
ORDER BY {order}
LIMIT ${len(args)}
"""
    return sql, args


def to_page(query: UserQuery, rows: list[Any]) -> UserPage:
    """The page from ``page_sql``'s rows: newest first, with its neighbours' cursors."""
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    if query.before is not None:
        rows.reverse()
    found = [User.from_row(row) for row in rows]
    first, last = (Cursor(found[0].created_at, found[0].id), Cursor(found[-1].created_at, found[-1].id)) \
        if found else (None, None)
    if query.before is not None:
        has_next, has_previous = True, more
    else:
        has_next, has_previous = more, query.after is not None
    return UserPage(
        users=found,
        next=last.encode() if has_next and last else None,
        previous=first.encode() if has_previous and first else None,
        filters=query.filters,
    )


#: The dashboard's overview figures in one statement over the listed users.
FIGURES_SQL = """
SELECT count(*) AS users,
       count(*) FILTER (WHERE email_confirmed_at IS NULL AND NOT is_anonymous) AS unconfirmed,
       count(*) FILTER (WHERE banned_until > now()) AS banned
FROM auth.users WHERE deleted_at IS NULL
"""

#: A user's sessions, latest activity first (refreshed_at is written when a refresh token rotates).
SESSIONS_SQL = """
SELECT id, created_at, updated_at, refreshed_at, not_after, aal::text AS aal, user_agent, host(ip) AS ip
FROM auth.sessions WHERE user_id = $1
ORDER BY coalesce(refreshed_at AT TIME ZONE 'UTC', updated_at, created_at) DESC
LIMIT 100
"""

#: The latest auth events naming a user, as actor or in their traits.
AUDIT_SQL = """
SELECT created_at, payload->>'action' AS action, payload->>'actor_username' AS actor, ip_address,
       payload->'traits' AS traits
FROM auth.audit_log_entries
WHERE payload->>'actor_id' = $1 OR payload->'traits'->>'user_id' = $1
ORDER BY created_at DESC
LIMIT $2
"""
