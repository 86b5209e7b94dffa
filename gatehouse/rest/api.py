"""HTTP handlers of ``/rest/v1``: PostgREST's protocol over grammar → plan → sqlgen → run_as."""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from gatehouse.core.caller import caller
from gatehouse.core.db import Database, Result, StatementTimedOut
from gatehouse.core.http import ApiMount, JSONResponse, read_json
from gatehouse.rest import grammar, sqlgen
from gatehouse.rest.errors import from_postgres, render_rest_error, rest_error
from gatehouse.rest.openapi import PRIVILEGES_SQL, Privileges, openapi
from gatehouse.rest.plan import CallPlan, Planner
from gatehouse.rest.query import Filter, Query, Shaping
from gatehouse.rest.schema import SchemaCache, TableInfo
from gatehouse.services import services

OBJECT = "application/vnd.pgrst.object+json"
ARRAY = "application/vnd.pgrst.array+json"
JSON = "application/json"
CSV = "text/csv"
PLAN = "application/vnd.pgrst.plan"
#: EXPLAIN options a plan request may name (``options=analyze|verbose``), as PostgREST.
_EXPLAIN_OPTIONS = ("analyze", "verbose", "settings", "buffers", "wal")
_MEDIA = (JSON, OBJECT, CSV, ARRAY, "application/*", "*/*", "application/openapi+json")

#: Every preference PostgREST knows, with the values each may take (None: any value, checked where
#: it is used). ``handling=strict`` refuses anything else (PGRST122); lenient handling ignores it.
KNOWN_PREFERENCES: dict[str, frozenset[str] | None] = {
    "return": frozenset({"minimal", "representation", "headers-only"}),
    "count": frozenset({"exact", "planned", "estimated"}),
    "resolution": frozenset({"merge-duplicates", "ignore-duplicates"}),
    "missing": frozenset({"default", "null"}),
    "handling": frozenset({"lenient", "strict"}),
    "max-affected": None,
    "timezone": None,
    "tx": frozenset({"commit", "rollback"}),
    "params": frozenset({"single-object"}),
}


@dataclass(frozen=True)
class Prefer:
    values: dict[str, str]

    @classmethod
    def parse(cls, request: Request) -> Prefer:
        values: dict[str, str] = {}
        for header in request.headers.getlist("prefer"):
            for item in header.split(","):
                key, _, value = item.strip().partition("=")
                if key:
                    values[key.strip().lower()] = value.strip().lower()
        return cls(values)

    @property
    def returns(self) -> str:
        return self.values.get("return", "minimal")

    @property
    def count(self) -> bool:
        return self.values.get("count") in ("exact", "planned", "estimated")

    def check_strict(self, tx_end: str = "commit") -> None:
        """``handling=strict``: a preference this server does not know (or does not apply) is an
        error, not something silently ignored. ``tx`` counts only where ``tx_end`` lets requests choose."""
        if self.values.get("handling") != "strict":
            return
        unknown = [f"{key}={value}" if value else key for key, value in self.values.items()
                   if key not in KNOWN_PREFERENCES
                   or (KNOWN_PREFERENCES[key] is not None and value not in KNOWN_PREFERENCES[key])  # type: ignore[operator]
                   or (key == "tx" and not tx_end.endswith("-allow-override"))]
        if unknown:
            raise rest_error("PGRST122", "Invalid preferences given with handling=strict", 400,
                             details=f"Invalid preferences: {', '.join(unknown)}")

    def rollback(self, tx_end: str) -> bool:
        """Whether the request's transaction is rolled back (GATEHOUSE_REST_TX_END, and ``tx=`` where
        it allows a request to choose)."""
        default = tx_end.startswith("rollback")
        if not tx_end.endswith("-allow-override"):
            return default
        return {"rollback": True, "commit": False}.get(self.values.get("tx", ""), default)

    @property
    def max_affected(self) -> int | None:
        """``max-affected=N``, which PostgREST applies only with ``handling=strict``."""
        value = self.values.get("max-affected")
        if value is None or self.values.get("handling") != "strict":
            return None
        if not value.isdigit():
            raise rest_error("PGRST100", f"max-affected must be a whole number, not {value!r}", 400)
        return int(value)


# -- request context ---------------------------------------------------------------------------


def _claims(request: Request) -> dict[str, Any]:
    """The caller's claims, as the edge verified them (before anything was parsed)."""
    return caller(request).checked().db_claims()


def _schema(request: Request, *, write: bool) -> str:
    exposed = services(request).settings.exposed_schemas
    header = request.headers.get("content-profile" if write else "accept-profile")
    if header is None:
        return exposed[0]
    if header not in exposed:
        raise rest_error("PGRST106", f"The schema must be one of the following: {', '.join(exposed)}", 406)
    return header


@dataclass(frozen=True)
class Media:
    """What the response is: JSON (an array), one object, CSV; ``strip``: ``nulls=stripped`` (keys
    whose value is null left out, as PostgREST's ``json_strip_nulls``)."""

    kind: str
    strip: bool = False
    #: The array media type the client named (``vnd.pgrst.array+json``), echoed as the Content-Type.
    named: str | None = None
    #: An execution plan instead of rows (``vnd.pgrst.plan+json|text``): the EXPLAIN options, and
    #: the media type whose statement is planned (``for="..."``).
    explain: str | None = None
    plan_for: str = JSON

    @property
    def single(self) -> bool:
        """Whether the statement answers one object."""
        return self.kind == OBJECT or self.plan_for == OBJECT


def _media(request: Request) -> Media:
    accept = request.headers.get("accept", "*/*") or "*/*"
    for part in accept.split(","):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        if media in (PLAN, f"{PLAN}+json", f"{PLAN}+text") and services(request).settings.rest_explain:
            return _plan_media(media, params)
        strip = "nulls=stripped" in params
        if strip and media not in (OBJECT, ARRAY):
            continue  # PostgREST strips nulls only for its own JSON media types
        if media in (OBJECT, CSV):
            return Media(media, strip)
        if media == ARRAY:
            return Media(JSON, strip, named=f"{ARRAY};nulls=stripped" if strip else ARRAY)
        if media in _MEDIA or media == "":
            return Media(JSON)
    raise rest_error("PGRST107", f"None of these media types are available: {accept}", 406)


def _plan_media(media: str, params: list[str]) -> Media:
    """``application/vnd.pgrst.plan+json; for="application/json"; options=analyze|verbose``."""
    settings = dict(param.partition("=")[::2] for param in params if param)
    planned = settings.get("for", JSON).strip('"') or JSON
    if planned not in (JSON, OBJECT, CSV, ARRAY):
        raise rest_error("PGRST107", f"None of these media types are available: {planned}", 406)
    options = [option for option in settings.get("options", "").strip('"').split("|") if option]
    unknown = [option for option in options if option not in _EXPLAIN_OPTIONS]
    if unknown:
        raise rest_error("PGRST100", f"Unknown EXPLAIN option {unknown[0][:40]!r}", 400,
                         hint="The options are " + ", ".join(_EXPLAIN_OPTIONS) + ", joined with |.")
    explain = ", ".join(["FORMAT JSON" if media.endswith("+json") else "FORMAT TEXT",
                         *(option.upper() for option in _EXPLAIN_OPTIONS if option in options)])
    return Media(media if media != PLAN else f"{PLAN}+text", explain=explain, plan_for=OBJECT if planned == OBJECT else JSON)


def _plan_response(result: Result, media: Media, *, head: bool) -> Response:
    """PostgREST's answer to a plan request: the EXPLAIN output, JSON or text."""
    media_type = f'{media.kind}; for="{media.plan_for}"; charset=utf-8'
    return Response(b"" if head else (result.body or "").encode(), status_code=200, media_type=media_type)


def _without_nulls(value: Any) -> Any:
    """``json_strip_nulls``: object keys whose value is null go, at every depth; array items stay."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _query(request: Request, *, rpc_args: frozenset[str] = frozenset()) -> Query:
    range_header = request.headers.get("range") if request.method in ("GET", "HEAD") else None
    return _parse_query(list(request.query_params.multi_items()), range_header, rpc_args)


def _parse_query(items: list[tuple[str, str]], range_header: str | None, rpc_args: frozenset[str] = frozenset()) -> Query:
    try:
        parsed = grammar.parse_query(items, rpc_args=rpc_args)
    except grammar.GrammarError as exc:
        raise rest_error("PGRST100", exc.message, 400, details=exc.details) from None
    if range_header:
        first, _, last = range_header.removeprefix("items=").partition("-")
        if not first.strip().isdigit() or (last.strip() and not last.strip().isdigit()):
            raise rest_error("PGRST103", f"Requested range not satisfiable: {range_header}", 416)
        offset = int(first)
        limit = int(last) - offset + 1 if last.strip() else None
        if limit is not None and limit < 0:
            raise rest_error("PGRST103", f"Requested range not satisfiable: {range_header}", 416)
        top = parsed.top
        limit = limit if top.limit is None else min(limit or top.limit, top.limit)
        parsed = Query(parsed.select, Shaping(top.conditions, top.order, limit, (top.offset or 0) + offset),
                       parsed.embedded, parsed.columns, parsed.on_conflict, parsed.params)
    return parsed


async def _body(request: Request) -> Any:
    return await read_json(request, object_only=False, reject_nul=False)  # NUL: the database's own 22P05


async def _run(request: Request, claims: dict[str, Any], sql: str, values: list[Any], *, readonly: bool,
               rollback: bool = False, explain: str | None = None, replica: bool = False) -> Result:
    """The statement as the caller, under their role's own statement_timeout if it has one
    (``ALTER ROLE authenticated SET statement_timeout = '3s'``, read with the schema cache)."""
    database: Database = services(request).database
    role = str(claims.get("role", "anon"))
    timeout_ms = services(request).schema_cache.statement_timeouts.get(role)
    try:
        return await database.run_as(claims, sql, values, readonly=readonly, rollback=rollback,
                                     timeout=timeout_ms / 1000 if timeout_ms else None, explain=explain,
                                     replica=replica)
    except asyncpg.PostgresError as exc:
        raise from_postgres(exc, role) from None
    except StatementTimedOut:
        raise rest_error("57014", "canceling statement due to statement timeout", 504) from None


def _planner(request: Request, schema: str) -> Planner:
    settings = services(request).settings
    return Planner(services(request).schema_cache, schema, max_rows=settings.rest_max_rows,
                   aggregates=settings.rest_aggregates)


@dataclass(frozen=True)
class ReadStatement:
    sql: str
    values: tuple[Any, ...]  # shared by every request that hits the cache: never mutated
    offset: int


#: Read statements each process remembers (least recently used first out), and the longest query
#: string and Range header whose statement is remembered: longer ones are planned every time, so
#: no entry grows with what a client sends (the tutorial's read: 0.4 KB of query, 1 KB of SQL).
READ_STATEMENTS = 1024
LONGEST_REMEMBERED = 2048


@functools.lru_cache(maxsize=READ_STATEMENTS)
def _read_statement(
    cache: SchemaCache, schema: str, table: str, query_string: bytes, range_header: str | None, single: bool,
    count: bool, max_rows: int | None, aggregates: bool = False,
) -> ReadStatement:
    """The statement for a read, remembered by everything it depends on.

    Parsing, planning and generating a read depend only on the schema snapshot, the path, the
    query string and three headers, never on the caller (RLS runs in the database), so a read
    seen before (the same user reloading a page) skips them. A new snapshot (a schema change)
    is a new key; errors are raised again each time, never remembered.
    """
    planner = Planner(cache, schema, max_rows=max_rows, aggregates=aggregates)
    node = planner.read(planner.table(table), _parse_query(QueryParams(query_string).multi_items(), range_header))
    params = sqlgen.Params()
    sql = sqlgen.read_sql(node, params, single=single, count=count)
    return ReadStatement(sql, tuple(params.values), node.offset or 0)


def read_statement(
    cache: SchemaCache, schema: str, table: str, query_string: bytes, range_header: str | None, single: bool,
    count: bool, max_rows: int | None, aggregates: bool = False,
) -> ReadStatement:
    """A read's statement: remembered unless its query string and Range header are long."""
    short = len(query_string) + len(range_header or "") <= LONGEST_REMEMBERED
    plan = _read_statement if short else _read_statement.__wrapped__
    return plan(cache, schema, table, query_string, range_header, single, count, max_rows, aggregates)


# -- responses -------------------------------------------------------------------------------------


def _content_range(offset: int, count: int, total: int | None) -> str:
    shown = "*" if count == 0 else f"{offset}-{offset + count - 1}"
    return f"{shown}/{'*' if total is None else total}"


def _respond(
    result: Result, media: Media, *, status: int = 200, schema: str, head: bool = False, offset: int = 0,
    headers: dict[str, str] | None = None,
) -> Response:
    all_headers = {"Content-Profile": schema, **(headers or {})}
    all_headers["Content-Range"] = _content_range(offset, result.page_count, result.total)
    if media.kind == OBJECT:
        if result.page_count != 1:
            raise rest_error(
                "PGRST116", "Cannot coerce the result to a single JSON object", 406,
                details=f"The result contains {result.page_count} rows",
            )
        body = _stripped(result.body or "null", media)
        media_type = f"{OBJECT};nulls=stripped" if media.strip else OBJECT
    elif media.kind == CSV:
        body = _csv(result.body or "[]").encode()
        media_type = "text/csv; charset=utf-8"
    else:
        body = _stripped(result.body or "[]", media)
        media_type = f"{media.named or 'application/json'}; charset=utf-8"
    if result.total is not None and status == 200 and result.page_count < result.total:
        status = 206
    return Response(b"" if head else body, status_code=status, media_type=media_type, headers=all_headers)


def _stripped(body: str, media: Media) -> bytes:
    return orjson.dumps(_without_nulls(orjson.loads(body))) if media.strip else body.encode()


def _csv(body: str) -> str:
    rows = orjson.loads(body)
    out = io.StringIO()
    if rows:
        writer = csv.writer(out, lineterminator="\n")
        columns = list(rows[0])
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _csv_cell(row.get(c)) for c in columns])
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- tables and views ------------------------------------------------------------------------------


async def read(request: Request) -> Response:
    schema = _schema(request, write=False)
    media = _media(request)
    prefer = Prefer.parse(request)
    settings = services(request).settings
    prefer.check_strict(settings.rest_tx_end)
    statement = read_statement(
        services(request).schema_cache, schema, request.path_params["table"], request.scope["query_string"],
        request.headers.get("range"), media.single, prefer.count, settings.rest_max_rows,
        settings.rest_aggregates,
    )
    result = await _run(request, _claims(request), statement.sql, list(statement.values), readonly=True,
                        explain=media.explain, replica=True)
    if media.explain:
        return _plan_response(result, media, head=request.method == "HEAD")
    return _respond(result, media, schema=schema, head=request.method == "HEAD", offset=statement.offset)


async def write(request: Request) -> Response:
    schema = _schema(request, write=True)
    media = _media(request)
    planner = _planner(request, schema)
    table = planner.table(request.path_params["table"])
    query = _query(request)
    prefer = Prefer.parse(request)
    tx_end = services(request).settings.rest_tx_end
    prefer.check_strict(tx_end)
    rollback = prefer.rollback(tx_end)
    returning = prefer.returns == "representation"
    body = await _body(request)
    method = request.method
    if method == "PUT":
        plan = planner.insert(table, _put_query(table, query, body), [body], resolution="merge-duplicates",
                              missing_default=False, returning=returning or prefer.returns == "headers-only")
        status = 200 if returning else 204
    elif method == "POST":
        rows = body if isinstance(body, list) else [body]
        if body is None or not all(isinstance(row, dict) for row in rows):
            raise rest_error("PGRST102", "Empty or invalid json", 400, details="Send a JSON object or an array of objects")
        if not rows:  # nothing to insert: say so in JSON, whatever Prefer asked for
            return _respond(Result("[]", 0, None), media, status=201, schema=schema)
        resolution = prefer.values.get("resolution")
        if resolution not in (None, "merge-duplicates", "ignore-duplicates"):
            raise rest_error("PGRST100", f"Unknown resolution {resolution!r}", 400)
        plan = planner.insert(
            table, query, rows, resolution=resolution, missing_default=prefer.values.get("missing") == "default",
            returning=returning or prefer.returns == "headers-only",
        )
        status = 201
    else:
        settings = services(request).settings
        if not query.top.conditions and not settings.rest_allow_unfiltered_writes:
            verb = "UPDATE" if method == "PATCH" else "DELETE"
            raise rest_error("21000", f"{verb} requires a WHERE clause", 400,
                             hint="Add a filter (for example ?id=eq.1); unfiltered writes are turned off.")
        if method == "PATCH":
            if not isinstance(body, dict):
                raise rest_error("PGRST102", "Empty or invalid json", 400, details="Send a JSON object")
            if not body:
                if not returning:
                    return Response(status_code=204, headers={"Content-Range": "*/0"})
                return _respond(Result("[]", 0, None), media, status=200, schema=schema)
            plan = planner.update(table, query, body, returning=returning)
        else:
            plan = planner.delete(table, query, returning=returning)
        status = 200 if returning else 204
    params = sqlgen.Params()
    max_affected = prefer.max_affected if method != "POST" else None
    sql = sqlgen.write_sql(plan, params, single=media.single, max_affected=max_affected)
    result = await _run(request, _claims(request), sql, params.values, readonly=False, rollback=rollback,
                        explain=media.explain)
    if media.explain:
        return _plan_response(result, media, head=False)
    headers = {"Preference-Applied": "tx=rollback"} if rollback and "tx" in prefer.values else {}
    if method == "POST" and prefer.returns == "headers-only" and table.primary_key and result.body:
        headers["Location"] = _location(table.name, table.primary_key, result.body)
    if prefer.count:  # a write's count is the rows it changed (PostgREST sends it for every count preference)
        result = Result(result.body, result.page_count, result.page_count)
    if not returning:
        return Response(status_code=status, headers={"Content-Range": f"*/{result.page_count}", **headers})
    return _respond(result, media, status=status, schema=schema, headers=headers)


def _put_query(table: TableInfo, query: Query, body: Any) -> Query:
    """``PUT``: one row upserted by primary key, by PostgREST's rules. The filters are ``eq`` on
    every primary-key column and nothing else (PGRST105), the body is one object (PGRST102; the
    columns it leaves out are NULL in a new row, as PostgREST's docs say to send them all), and
    its key values are the filters' (PGRST115)."""
    key = table.primary_key
    filters = {c.field.name: c for c in query.top.conditions if isinstance(c, Filter)}
    if (not key or len(query.top.conditions) != len(key) or set(filters) != set(key)
            or any(f.operator != "eq" or f.negated or f.quantifier or f.field.json_path for f in filters.values())
            or query.top.limit is not None or query.top.offset is not None):
        raise rest_error("PGRST105", "Filters must include all and only primary key columns with 'eq' operators", 400)
    if not isinstance(body, dict):
        raise rest_error("PGRST102", "Empty or invalid json", 400, details="PUT takes one JSON object")
    if any(str(body.get(name)) != filters[name].value for name in key):
        raise rest_error("PGRST115", "Payload values do not match URL in primary key column(s)", 400)
    return Query(query.select, Shaping(), query.embedded, query.columns, key, query.params)


def _location(table: str, primary_key: tuple[str, ...], body: str) -> str:
    rows = orjson.loads(body)
    if not rows:
        return f"/{table}"
    first = rows[0] if isinstance(rows, list) else rows
    filters = "&".join(f"{quote(k)}=eq.{quote(str(first.get(k)))}" for k in primary_key)
    return f"/{table}?{filters}"


# -- functions ---------------------------------------------------------------------------------------


async def rpc(request: Request) -> Response:
    get = request.method in ("GET", "HEAD")
    schema = _schema(request, write=not get)
    media = _media(request)
    prefer = Prefer.parse(request)
    tx_end = services(request).settings.rest_tx_end
    prefer.check_strict(tx_end)
    planner = _planner(request, schema)
    name = request.path_params["function"]
    arg_names = planner.function_arg_names(name)
    query = _query(request, rpc_args=arg_names)
    whole_body: Any = None
    raw_type = _RAW_BODIES.get(request.headers.get("content-type", "").split(";")[0].strip().lower())
    if not get and raw_type is not None:
        plan = planner.call_raw(name, raw_type, await _raw_body(request, raw_type), query)
        return await _answer_call(request, plan, media, prefer, schema, get=False)
    if get:
        args: dict[str, Any] = {}
        for key, value in query.params:  # a repeated key is a list: ?v=a&v=b for an array or VARIADIC parameter
            if key in arg_names:
                args[key] = [*args[key], value] if isinstance(args.get(key), list) else (
                    [args[key], value] if key in args else value)
    else:
        body = await _body(request)
        if body is None:
            body = {}
        single_object = prefer.values.get("params") == "single-object"
        if not isinstance(body, dict) and not single_object:
            raise rest_error("PGRST102", "Empty or invalid json", 400, details="Send a JSON object of named arguments")
        args, whole_body = (body if isinstance(body, dict) else {}), body
    plan = planner.call(name, args, query, whole_body=whole_body,
                        single_object=not get and prefer.values.get("params") == "single-object")
    return await _answer_call(request, plan, media, prefer, schema, get=get)


#: Request bodies a function takes raw, as its one unnamed parameter of this type (PostgREST's rule).
_RAW_BODIES = {"text/plain": "text", "application/octet-stream": "bytea"}


async def _raw_body(request: Request, type_name: str) -> str | bytes:
    raw = await request.body()
    if type_name == "bytea":
        return raw
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise rest_error("PGRST102", "The request body is not valid UTF-8 text", 400,
                         details=f"A {type_name} parameter takes UTF-8 text; send bytes as application/octet-stream.") from None
    if "\x00" in text:
        raise rest_error("22P05", "The request body contains a NUL character, which text cannot hold", 400)
    return text


async def _answer_call(request: Request, plan: CallPlan, media: Media, prefer: Prefer, schema: str, *,
                       get: bool) -> Response:
    tx_end = services(request).settings.rest_tx_end
    readonly = get or plan.function.volatility != "volatile"
    params = sqlgen.Params()
    sql = sqlgen.call_sql(plan, params, single=media.single, count=prefer.count)
    result = await _run(request, _claims(request), sql, params.values, readonly=readonly,
                        rollback=not readonly and prefer.rollback(tx_end), explain=media.explain, replica=get)
    if media.explain:
        return _plan_response(result, media, head=request.method == "HEAD")
    if plan.function.return_type == "void":
        return Response(status_code=204)
    if plan.result is None and media.kind != CSV:
        return Response(b"" if request.method == "HEAD" else _stripped(result.body or "null", media), status_code=200,
                        media_type="application/json; charset=utf-8", headers={"Content-Profile": schema})
    return _respond(result, media, schema=schema, head=request.method == "HEAD")


async def root(request: Request) -> Response:
    """The OpenAPI description of what the caller's role may use (PostgREST's follow-privileges)."""
    schema = _schema(request, write=False)
    settings = services(request).settings
    result = await _run(request, _claims(request), PRIVILEGES_SQL, [schema], readonly=True)
    document = openapi(services(request).schema_cache, schema, server_url=f"{settings.public_api_url}/rest/v1",
                       privileges=Privileges.from_json(result.body))
    return JSONResponse(document, headers={"Content-Type": "application/openapi+json; charset=utf-8"})


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/rpc/{function}", rpc, methods=["GET", "HEAD", "POST"]),
    Route("/{table}", read, methods=["GET", "HEAD"]),
    Route("/{table}", write, methods=["POST", "PUT", "PATCH", "DELETE"]),
]

#: PostgREST checks the token before it parses the request: a bad token wins over a bad filter.
MOUNT = ApiMount(Mount("/rest/v1", routes=routes), render_rest_error, key_required=True, token_at_edge=True)
