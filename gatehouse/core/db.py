"""Database access: the two pools, the one place roles are set (``as_user``), and start-up.

* The **admin pool** connects with ``GATEHOUSE_DATABASE_URL`` (or the embedded superuser). It
  serves Gatehouse's own bookkeeping, never a caller's data: the auth service and its admin API
  (``auth.*``), storage's bucket settings, public-bucket reads and render rate limits, the
  background workers (schema watcher, blob janitor, mail sender), the development mail inbox,
  and the readiness check and metrics. Migrations run on a connection of their own (``prepare``).
* The **request pool** connects as ``authenticator``, which has no rights of its own. Every data
  access made for a caller goes through ``as_user(claims)``, which switches to the caller's role
  for one transaction. Nothing else in Gatehouse sets roles.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson

from gatehouse.core.config import Settings
from gatehouse.core.embedded import EmbeddedPostgres
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet
from gatehouse.core.migrate import migrate

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger("gatehouse.db")

#: A connection as Gatehouse's queries take it: one of their own or one lent by a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
#: Where a single statement may run: a connection, or a pool (which lends one for the statement).
Queryable: TypeAlias = "Conn | asyncpg.Pool[asyncpg.Record]"

#: The roles a request may run as. A token naming any other role is refused before SQL runs.
REQUEST_ROLES = frozenset({"anon", "authenticated", "service_role"})
AUTHENTICATOR = "authenticator"


#: Errors that mean "the database cannot be reached now", not "the request is wrong".
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def is_unavailable(error: BaseException) -> bool:
    """True for a lost or refused database connection (the request may succeed later)."""
    if isinstance(error, asyncpg.PostgresError):
        state = error.sqlstate or ""
        return state.startswith(_UNAVAILABLE_STATES)
    return isinstance(error, OSError | asyncpg.InterfaceError | TimeoutError | asyncpg.exceptions.InternalClientError)


def unavailable() -> GatehouseError:
    return GatehouseError(
        "database_unavailable", "The database is unavailable right now; try again in a few seconds", status=503
    )


#: What ``gatehouse.run_as`` and ``gatehouse.become`` raise (0014_session_check.sql) when a token's session is gone.
SESSION_ENDED_SQLSTATE = "GH401"


class SessionEnded(GatehouseError):
    """The access token is still signed and unexpired, but the session it names has ended.

    Signed out (any scope), ended by an administrator (ban, delete), expired or belonging to a
    deleted or banned user: the request is refused before anything runs as the caller. Each
    API renders it in its own shape (auth: GoTrue's ``session_not_found``; rest: PGRST303 401;
    storage: InvalidJWT).
    """

    def __init__(self, reason: str) -> None:
        super().__init__("session_not_found", f"Session from session_id claim in JWT does not exist: {reason}",
                         status=403)
        self.reason = reason


def _session_ended(error: asyncpg.PostgresError) -> SessionEnded | None:
    if error.sqlstate == SESSION_ENDED_SQLSTATE:
        return SessionEnded(error.message)
    return None


def _is_uuid(value: object) -> bool:
    """A UUID in its canonical text form, the only form Gatehouse puts in tokens."""
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def with_credentials(url: str, user: str, password: str) -> str:
    """The same server and database as ``url``, logging in as another role."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _claims_json(claims: Mapping[str, Any]) -> str:
    return orjson.dumps(claims).decode()


async def _no_reset(conn: Conn) -> None:
    return None


async def _init_connection(conn: Conn) -> None:
    await conn.set_type_codec("jsonb", encoder=_claims_json, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_claims_json, decoder=orjson.loads, schema="pg_catalog")


class Database:
    def __init__(self, admin_url: str, keys: KeySet, settings: Settings) -> None:
        self._admin_url = admin_url
        self._request_url = with_credentials(admin_url, AUTHENTICATOR, keys.authenticator_password)
        self._settings = settings
        self._admin: asyncpg.Pool | None = None
        self._request: asyncpg.Pool | None = None

    async def open(self) -> None:
        options: dict[str, Any] = {
            "min_size": self._settings.db_pool_min_size,
            "max_size": self._settings.db_pool_max_size,
            "timeout": self._settings.db_connect_timeout,
            # A query over a dead connection must fail, not hang: statement timeout plus a margin.
            "command_timeout": (self._settings.statement_timeout or 30_000) / 1000 + 5,
            "init": _init_connection,
        }
        # No reset query on release (a round trip per request): nothing in Gatehouse changes a
        # session's state. Roles and claims are set transaction-locally, locks are transaction
        # locks, and the two LISTEN users (schema watcher, mail sender) UNLISTEN before they
        # return their connection. asyncpg still rolls back a transaction left open.
        self._admin = await asyncpg.create_pool(self._admin_url, **options, reset=_no_reset)
        self._request = await asyncpg.create_pool(
            self._request_url,
            **options,
            server_settings={"statement_timeout": str(self._settings.statement_timeout)},
            reset=_no_reset,
        )

    async def close(self) -> None:
        for pool in (self._request, self._admin):
            if pool is not None:
                await pool.close()
        self._admin = self._request = None

    def pool_figures(self) -> dict[str, PoolFigures]:
        """Connections of each open pool (``admin``, ``request``), for metrics."""
        return {
            name: PoolFigures(size=pool.get_size(), idle=pool.get_idle_size())
            for name, pool in (("admin", self._admin), ("request", self._request))
            if pool is not None
        }

    @property
    def admin(self) -> asyncpg.Pool:
        """The privileged pool: for Gatehouse's own tables (see the module docstring), never for a caller's data."""
        if self._admin is None:
            raise RuntimeError("database is not open")
        return self._admin

    @asynccontextmanager
    async def as_user(self, claims: Mapping[str, Any] | None, *, readonly: bool = False) -> AsyncIterator[Conn]:
        """Yield a connection inside a transaction running as the caller.

        The role comes from the verified claims' ``role`` (``anon`` when there are none) and
        ``request.jwt.claims`` holds the claims, so ``auth.uid()``, ``auth.role()``,
        ``auth.jwt()`` and every RLS policy see the caller. Both settings are transaction-local:
        they end with the transaction, whatever happens, before the connection is reused. A token
        with a ``session_id`` is checked in the same first statement: ``SessionEnded`` if the
        session has ended or expired, or its user is banned or deleted.
        """
        role, claims = self._caller(claims)
        async with self._request_pool.acquire() as conn, conn.transaction(readonly=readonly):
            if "session_id" in claims:
                # One statement: the session check (0014_session_check.sql), then role and claims.
                try:
                    await conn.execute("SELECT gatehouse.become($1, $2)", role, _claims_json(claims))
                except asyncpg.PostgresError as exc:
                    raise _session_ended(exc) or exc from None
            else:
                await conn.execute(
                    "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
                    role,
                    _claims_json(claims),
                )
            yield conn

    @asynccontextmanager
    async def checking(self) -> AsyncIterator[Conn]:
        """Yield a request connection (as ``authenticator``) inside a transaction that is always
        rolled back: for SQL functions that switch to a caller's role themselves (through
        ``gatehouse.become``, session check first) to ask what that caller may do, keeping nothing."""
        async with self._request_pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                yield conn
            finally:
                await transaction.rollback()

    async def ready(self, migrations_dir: Any = None) -> dict[str, str]:
        """Readiness for load balancers: the database answers and no migration is pending."""
        from gatehouse.core.migrate import all_migrations, pending

        async with self.admin.acquire(timeout=self._settings.db_connect_timeout) as conn:
            todo = await pending(conn, all_migrations(migrations_dir, starter=self._settings.starter_schema != "none"))
        return {"database": "ok", "migrations": "current" if not todo else f"{len(todo)} pending"}

    async def run_as(
        self, claims: Mapping[str, Any] | None, sql: str, values: list[Any], *, readonly: bool = False,
        rollback: bool = False, timeout: float | None = None, explain: str | None = None,
    ) -> Result:
        """Run one generated statement as the caller, in one round trip (see 0007_request_function.sql).

        The same rules as ``as_user``: the role comes from the verified claims and must be one of
        the request roles; values travel as one JSON array read back by the statement. A token
        naming a session that has ended raises ``SessionEnded``, checked inside the same call.
        ``rollback``: answer as if it ran, keep nothing (the data API's ``Prefer: tx=rollback``;
        two more round trips, for a transaction of its own). ``timeout``: seconds before the
        statement is cancelled (a role's own statement_timeout); ``TimeoutError`` then.
        ``explain``: EXPLAIN options (``FORMAT JSON, ANALYZE``): the statement's plan is the body
        instead, and the transaction is rolled back (0026_explain.sql).
        """
        role, claims = self._caller(claims)
        async with self._request_pool.acquire() as conn:
            try:
                if not rollback and explain is None:
                    return await _run_as(conn, role, claims, readonly, sql, values, timeout)
                transaction = conn.transaction()
                await transaction.start()
                try:
                    if explain is not None:
                        plan = await conn.fetchval("SELECT gatehouse.explain_as($1, $2, $3, $4, $5::jsonb, $6)", role,
                                                   _claims_json(claims), readonly, sql, values, explain, timeout=timeout)
                        return Result(plan, 0, None)
                    return await _run_as(conn, role, claims, readonly, sql, values, timeout)
                finally:
                    await transaction.rollback()
            except asyncpg.PostgresError as exc:
                raise _session_ended(exc) or exc from None
            except TimeoutError:
                if timeout is None:
                    raise
                raise StatementTimedOut(timeout) from None

    async def confirm_session(self, claims: Mapping[str, Any] | None) -> None:
        """Raise ``SessionEnded`` unless the claims' session is alive (for requests that run no SQL
        as the caller, such as signing an upload URL). Claims without a session pass."""
        if not claims or claims.get("session_id") is None:
            return
        if not (_is_uuid(claims["session_id"]) and _is_uuid(claims.get("sub"))):
            raise SessionEnded("the access token names no valid session")
        async with self._request_pool.acquire() as conn:
            refusal = await conn.fetchval("SELECT gatehouse.session_refusal($1::uuid, $2::uuid)",
                                          str(claims["session_id"]), str(claims["sub"]))
        if refusal is not None:
            raise SessionEnded(refusal)

    def _caller(self, claims: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """The role to run as (``anon`` without claims), refused unless it is a request role."""
        checked = dict(claims) if claims else {"role": "anon"}
        role = checked.get("role", "anon")
        if role not in REQUEST_ROLES:
            raise GatehouseError("bad_jwt", f"role {role!r} is not allowed", status=403)
        if checked.get("session_id") is not None and not (
            _is_uuid(checked["session_id"]) and _is_uuid(checked.get("sub"))
        ):  # the database casts both to uuid: refuse anything else before it does
            raise SessionEnded("the access token names no valid session")
        return role, checked

    @property
    def _request_pool(self) -> asyncpg.Pool:
        if self._request is None:
            raise RuntimeError("database is not open")
        return self._request


class StatementTimedOut(Exception):
    """A statement ran past the caller's role's statement_timeout and was cancelled."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"canceling statement due to statement timeout ({seconds:g} s)")
        self.seconds = seconds


@dataclass(frozen=True)
class PoolFigures:
    """A pool's connections at one moment: all it holds, and the idle ones among them."""

    size: int
    idle: int

    @property
    def in_use(self) -> int:
        return self.size - self.idle


@dataclass(frozen=True)
class Result:
    """What a generated data statement yields: the JSON body, the rows in it, the total if counted."""

    body: str | None
    page_count: int
    total: int | None


async def _run_as(
    conn: Conn, role: str, claims: Mapping[str, Any], readonly: bool, sql: str, values: list[Any],
    timeout: float | None = None,
) -> Result:
    row = await conn.fetchrow(
        "SELECT body, page_count, total FROM gatehouse.run_as($1, $2, $3, $4, $5::jsonb)",
        role, _claims_json(claims), readonly, sql, values, timeout=timeout,
    )
    assert row is not None  # run_as answers exactly one row
    return Result(row["body"], row["page_count"], row["total"])


async def prepare(admin_url: str, keys: KeySet, settings: Settings) -> list[str]:
    """Apply migrations and give ``authenticator`` its password. Safe to run from many processes."""
    conn = await asyncpg.connect(admin_url, timeout=settings.db_connect_timeout)
    try:
        applied = await migrate(conn, settings.migrations_dir, starter=settings.starter_schema != "none")
        # ALTER ROLE takes no bind parameters; format(%L) quotes the password server-side.
        statement = await conn.fetchval(
            "SELECT format('ALTER ROLE authenticator WITH LOGIN NOINHERIT PASSWORD %L', $1::text)",
            keys.authenticator_password,
        )
        await conn.execute(statement)
        return applied
    finally:
        await conn.close()


@dataclass
class DatabaseServer:
    """The PostgreSQL this process uses: external (a URL) or the embedded one it may own."""

    url: str
    embedded: EmbeddedPostgres | None


@contextmanager
def database_server(settings: Settings) -> Iterator[DatabaseServer]:
    """Use ``GATEHOUSE_DATABASE_URL``, or start the embedded PostgreSQL for the block's duration."""
    if settings.database_url:
        yield DatabaseServer(settings.database_url, None)
        return
    embedded = EmbeddedPostgres(settings.data_dir, settings.embedded_db_port)
    url = embedded.start()
    try:
        yield DatabaseServer(url, embedded)
    finally:
        embedded.stop()
