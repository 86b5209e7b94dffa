"""Database access: the pools, the one place roles are set (``as_user``), and start-up.

* The **admin pool** connects with ``GATEHOUSE_DATABASE_URL`` (or the embedded superuser). It
  serves Gatehouse's own bookkeeping, never a caller's data: the auth service and its admin API
  (``auth.*``), storage's bucket settings, public-bucket reads and render rate limits, the
  background workers (schema watcher, blob janitor, mail sender), the development mail inbox,
  and the readiness check and metrics. Migrations run on a connection of their own (``prepare``).
* The **request pool** connects as ``authenticator``, which has no rights of its own. Every data
  access made for a caller goes through ``as_user(claims)``, which switches to the caller's role
  for one transaction. Nothing else in Gatehouse sets roles.
* The **replica pool** (``GATEHOUSE_DATABASE_READ_URL``) connects as ``authenticator`` to a
  streaming replica; the reads that may go there say so (``replica=True``) and
  ``gatehouse.core.replica`` decides, per caller, whether they do.
* The **listen pool** serves every LISTEN (and its holder's own queries): the admin pool, or,
  when ``GATEHOUSE_DATABASE_URL`` goes through a pooler in transaction mode, a pool on
  ``GATEHOUSE_DATABASE_DIRECT_URL``, the server itself. Through such a pooler the pools keep no
  named prepared statements (a statement would meet another server connection) and send no
  ``statement_timeout`` at start-up (a pooler refuses startup settings it does not know):
  ``prepare`` sets it on ``authenticator`` instead. Everything else already fits transaction
  pooling: roles, claims and locks are transaction-local and every request is one transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson

from gatehouse.core.config import Settings
from gatehouse.core.embedded import EmbeddedPostgres
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet
from gatehouse.core.listen import ListenHub
from gatehouse.core.migrate import migrate
from gatehouse.core.replica import CHANNEL as WRITES_CHANNEL
from gatehouse.core.replica import Replica, caller_key

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


#: What a replica answers that the primary would not: a table, column or function it has not replayed
#: yet, or a read cancelled by a conflict with recovery (40001). The primary is asked instead.
_REPLICA_ONLY_ERRORS = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError, asyncpg.UndefinedFunctionError,
                        asyncpg.SerializationError)


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
        self._read_url = (with_credentials(settings.database_read_url, AUTHENTICATOR, keys.authenticator_password)
                          if settings.database_read_url else None)
        self._settings = settings
        self._admin: asyncpg.Pool | None = None
        self._request: asyncpg.Pool | None = None
        self._direct: asyncpg.Pool | None = None
        self._replica: Replica | None = None
        self._listener: ListenHub | None = None

    async def open(self) -> None:
        pooled = self._settings.database_direct_url is not None
        options: dict[str, Any] = {
            "min_size": self._settings.db_pool_min_size,
            "max_size": self._settings.db_pool_max_size,
            "timeout": self._settings.db_connect_timeout,
            # A query over a dead connection must fail, not hang: statement timeout plus a margin.
            "command_timeout": (self._settings.statement_timeout or 30_000) / 1000 + 5,
            "init": _init_connection,
        }
        # A pooler in transaction mode may run each statement on another server connection: no
        # named prepared statements (asyncpg then parses each query unnamed, in the same
        # transaction as its execution) and no startup settings.
        pooler: dict[str, Any] = {"statement_cache_size": 0} if pooled else {}
        timeout: dict[str, Any] = (
            {} if pooled else {"server_settings": {"statement_timeout": str(self._settings.statement_timeout)}})
        # No reset query on release (a round trip per request): nothing in Gatehouse changes a
        # session's state. Roles and claims are set transaction-locally, locks are transaction
        # locks, and the LISTEN hub UNLISTENs before it returns its connection. asyncpg still
        # rolls back a transaction left open.
        self._admin = await asyncpg.create_pool(self._admin_url, **options, **pooler, reset=_no_reset)
        self._request = await asyncpg.create_pool(self._request_url, **options, **pooler, **timeout, reset=_no_reset)
        if self._settings.database_direct_url is not None:
            # Only the LISTEN holders (and their own queries): connections are opened as they ask.
            self._direct = await asyncpg.create_pool(self._settings.database_direct_url,
                                                     **{**options, "min_size": 0}, reset=_no_reset)
        # A keepalive every 10 s: a silently dead peer costs the realtime bus (presence) at most that.
        self._listener = ListenHub(self.listen_pool, keepalive=10.0)
        if self._read_url is not None:
            # Connected lazily: a replica that is down at start costs its reads, not the start.
            replica_pool = await asyncpg.create_pool(
                self._read_url, **{**options, "min_size": 0},
                server_settings={"statement_timeout": str(self._settings.statement_timeout)}, reset=_no_reset)
            self._replica = Replica(replica_pool, self._listener, max_lag=self._settings.database_read_max_lag,
                                    timeout=self._settings.db_connect_timeout)
            await self._replica.start()

    async def close(self) -> None:
        if self._replica is not None:
            await self._replica.stop()
            await self._replica.pool.close()
        for pool in (self._request, self._direct, self._admin):
            if pool is not None:
                await pool.close()
        self._admin = self._request = self._direct = self._replica = self._listener = None

    def pool_figures(self) -> dict[str, PoolFigures]:
        """Connections of each open pool (``admin``, ``request``, ``direct``, ``replica``), for metrics."""
        replica = self._replica.pool if self._replica is not None else None
        return {
            name: PoolFigures(size=pool.get_size(), idle=pool.get_idle_size())
            for name, pool in (("admin", self._admin), ("request", self._request), ("direct", self._direct),
                               ("replica", replica))
            if pool is not None
        }

    @property
    def listen_pool(self) -> asyncpg.Pool:
        """The pool for LISTEN: the server itself even when the other pools go through a pooler."""
        return self._direct if self._direct is not None else self.admin

    @property
    def listener(self) -> ListenHub:
        """The process's one LISTEN connection, shared by every user (see ``gatehouse.core.listen``)."""
        if self._listener is None:
            raise RuntimeError("database is not open")
        return self._listener

    @property
    def admin(self) -> asyncpg.Pool:
        """The privileged pool: for Gatehouse's own tables (see the module docstring), never for a caller's data."""
        if self._admin is None:
            raise RuntimeError("database is not open")
        return self._admin

    @asynccontextmanager
    async def as_user(
        self, claims: Mapping[str, Any] | None, *, readonly: bool = False, replica: bool = False,
    ) -> AsyncIterator[Conn]:
        """Yield a connection inside a transaction running as the caller.

        The role comes from the verified claims' ``role`` (``anon`` when there are none) and
        ``request.jwt.claims`` holds the claims, so ``auth.uid()``, ``auth.role()``,
        ``auth.jwt()`` and every RLS policy see the caller. Both settings are transaction-local:
        they end with the transaction, whatever happens, before the connection is reused. A token
        with a ``session_id`` is checked in the same first statement: ``SessionEnded`` if the
        session has ended or expired, or its user is banned or deleted. ``replica``: a read that
        the read replica may serve (see ``gatehouse.core.replica``); the primary if it fails to
        begin there.
        """
        role, claims = self._caller(claims)
        notify = caller_key(claims) if self._replica is not None and not readonly else None
        async with AsyncExitStack() as stack:
            conn: Conn | None = None
            if replica and readonly and self._replica is not None and await self._replica.serves(claims):
                attempt = AsyncExitStack()
                try:
                    conn = await _begin(attempt, self._replica.pool, role, claims, readonly, None)
                except Exception as exc:
                    await attempt.__aexit__(type(exc), exc, exc.__traceback__)
                    if not is_unavailable(exc):
                        raise
                    self._replica.failed(exc)
                else:
                    stack.push_async_exit(attempt)
            if conn is None:
                conn = await _begin(stack, self._request_pool, role, claims, readonly, notify)
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
        """Readiness for load balancers: the database answers and no migration is pending. The
        replica's state is reported (``ok``, ``lagging``, ``unavailable``) but never makes a
        process unready: without it, the primary serves every read."""
        from gatehouse.core.migrate import all_migrations, pending

        async with self.admin.acquire(timeout=self._settings.db_connect_timeout) as conn:
            todo = await pending(conn, all_migrations(migrations_dir, starter=self._settings.starter_schema != "none"))
        checks = {"database": "ok", "migrations": "current" if not todo else f"{len(todo)} pending"}
        if self._replica is not None:
            checks["replica"] = self._replica.state
        return checks

    async def run_as(
        self, claims: Mapping[str, Any] | None, sql: str, values: list[Any], *, readonly: bool = False,
        rollback: bool = False, timeout: float | None = None, explain: str | None = None, replica: bool = False,
    ) -> Result:
        """Run one generated statement as the caller, in one round trip (see 0007_request_function.sql).

        The same rules as ``as_user``: the role comes from the verified claims and must be one of
        the request roles; values travel as one JSON array read back by the statement. A token
        naming a session that has ended raises ``SessionEnded``, checked inside the same call.
        ``rollback``: answer as if it ran, keep nothing (the data API's ``Prefer: tx=rollback``;
        two more round trips, for a transaction of its own). ``timeout``: seconds before the
        statement is cancelled (a role's own statement_timeout); ``TimeoutError`` then.
        ``explain``: EXPLAIN options (``FORMAT JSON, ANALYZE``): the statement's plan is the body
        instead, and the transaction is rolled back (0026_explain.sql). ``replica``: a read that
        the read replica may serve (see ``gatehouse.core.replica``); the primary if it fails there.
        A write announces itself (``pg_notify``, in the same statement) when a replica is in use.
        """
        role, claims = self._caller(claims)
        if replica and readonly and self._replica is not None and await self._replica.serves(claims):
            try:
                return await self._run_on(self._replica.pool, role, claims, readonly, sql, values, rollback=rollback,
                                          timeout=timeout, explain=explain, notify=None)
            except _REPLICA_ONLY_ERRORS:
                pass  # the primary answers as the replica should have
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self._replica.failed(exc)
        notify = caller_key(claims) if self._replica is not None and not readonly else None
        return await self._run_on(self._request_pool, role, claims, readonly, sql, values, rollback=rollback,
                                  timeout=timeout, explain=explain, notify=notify)

    async def _run_on(
        self, pool: asyncpg.Pool, role: str, claims: dict[str, Any], readonly: bool, sql: str, values: list[Any], *,
        rollback: bool, timeout: float | None, explain: str | None, notify: str | None,
    ) -> Result:
        async with pool.acquire() as conn:
            try:
                if not rollback and explain is None:
                    return await _run_as(conn, role, claims, readonly, sql, values, timeout, notify)
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


async def _begin(
    stack: AsyncExitStack, pool: asyncpg.Pool, role: str, claims: Mapping[str, Any], readonly: bool, notify: str | None,
) -> Conn:
    """A connection of ``pool`` in a transaction running as the caller (``as_user``), closed by ``stack``."""
    conn: Conn = await stack.enter_async_context(pool.acquire())
    await stack.enter_async_context(conn.transaction(readonly=readonly))
    announce = f", pg_catalog.pg_notify('{WRITES_CHANNEL}', $3)" if notify is not None else ""
    extra = [notify] if notify is not None else []
    if "session_id" in claims:
        # One statement: the session check (0014_session_check.sql), then role and claims.
        try:
            await conn.execute(f"SELECT gatehouse.become($1, $2){announce}", role, _claims_json(claims), *extra)
        except asyncpg.PostgresError as exc:
            raise _session_ended(exc) or exc from None
    else:
        await conn.execute(
            f"SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true){announce}",
            role, _claims_json(claims), *extra,
        )
    return conn


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
    timeout: float | None = None, notify: str | None = None,
) -> Result:
    if notify is None:
        row = await conn.fetchrow(
            "SELECT body, page_count, total FROM gatehouse.run_as($1, $2, $3, $4, $5::jsonb)",
            role, _claims_json(claims), readonly, sql, values, timeout=timeout,
        )
    else:  # the write's notice commits with it, or not at all
        row = await conn.fetchrow(
            "SELECT r.body, r.page_count, r.total FROM gatehouse.run_as($1, $2, $3, $4, $5::jsonb) AS r, "
            f"pg_catalog.pg_notify('{WRITES_CHANNEL}', $6) AS n",
            role, _claims_json(claims), readonly, sql, values, notify, timeout=timeout,
        )
    assert row is not None  # run_as answers exactly one row
    return Result(row["body"], row["page_count"], row["total"])


POOLER_WITHOUT_DIRECT_URL = (
    "GATEHOUSE_DATABASE_URL goes through a connection pooler (it refused the startup setting statement_timeout). "
    "In transaction mode a pooler cannot carry the migrations' session lock nor LISTEN (schema reloads, mail, "
    "realtime, signing keys): set GATEHOUSE_DATABASE_DIRECT_URL to the PostgreSQL server's own URL for them."
)


async def prepare(admin_url: str, keys: KeySet, settings: Settings) -> list[str]:
    """Apply migrations, give ``authenticator`` its password and say whether a replica is in use.
    Safe to run from many processes.

    Through a pooler, this runs on ``GATEHOUSE_DATABASE_DIRECT_URL`` (the migrations hold a session
    lock) and gives ``authenticator`` the statement timeout that the request pool cannot send at
    start-up (server connections the pooler already holds keep the value they logged in with)."""
    direct = settings.database_direct_url
    try:
        # statement_timeout as a startup setting (none for migrations) doubles as a probe: a pooler
        # such as pgbouncer refuses startup settings it does not track.
        conn = await asyncpg.connect(direct or admin_url, timeout=settings.db_connect_timeout,
                                     server_settings={"statement_timeout": "0"})
    except asyncpg.PostgresError as exc:
        if "unsupported startup parameter" not in str(exc):
            raise
        raise GatehouseError("pooler_without_direct_url", POOLER_WITHOUT_DIRECT_URL) from None
    try:
        applied = await migrate(conn, settings.migrations_dir, starter=settings.starter_schema != "none")
        # ALTER ROLE takes no bind parameters; format(%L) quotes the password server-side.
        statement = await conn.fetchval(
            "SELECT format('ALTER ROLE authenticator WITH LOGIN NOINHERIT PASSWORD %L', $1::text)",
            keys.authenticator_password,
        )
        await conn.execute(statement)
        # Sign-ins, sign-outs and bans announce themselves only for a replica (0035).
        await conn.execute("SELECT gatehouse.announce_writes($1)", settings.database_read_url is not None)
        if direct is not None:
            await conn.execute(await conn.fetchval(
                "SELECT format('ALTER ROLE authenticator IN DATABASE %I SET statement_timeout = %s', "
                "current_database(), $1::int)", settings.statement_timeout))
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
