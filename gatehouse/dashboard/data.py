"""The Data section's pages at ``/_/data``: the exposed schemas' tables, one table's columns,
policies and rows, and the forms that edit, insert and delete a row.

Only tables in the data API's schema cache (the schemas ``GATEHOUSE_REST_SCHEMAS`` exposes) are
reachable; any other name is a 404. Reads and writes go through ``data_rows.Rows`` (the data
API's planner and ``run_as``); the catalog facts through ``data_catalog``. "View as" re-runs the
grid under another role and claims and offers no changes. Every change is a POST carrying the
CSRF token, is one statement (all or nothing), and once committed is audited with the table, the
row's primary key and the names of the columns changed, never their values. Deleting asks first.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard import audit, data_catalog
from gatehouse.dashboard.data_rows import (
    ADMIN,
    MAX_FILTERS,
    OPERATORS,
    PAGE_SIZE,
    FilterSpec,
    GridQuery,
    Rows,
    as_text,
    bad,
    cell,
    editable,
    find_viewer,
    is_json,
    key_of,
    parse_value,
)
from gatehouse.dashboard.pages import CSRF_HEADER, Visit, client_ip, dashboard, refused, render, signed_in
from gatehouse.dashboard.sessions import csrf_matches
from gatehouse.rest.schema import TableInfo
from gatehouse.services import services

#: Never shown, whatever the data API exposes: the dashboard's own accounts and sessions live there.
HIDDEN_SCHEMAS = frozenset({"gatehouse", "pg_catalog", "information_schema"})


def table_url(table: TableInfo, suffix: str = "", params: list[tuple[str, str]] | None = None) -> str:
    url = f"/_/data/{quote(table.schema, safe='')}/{quote(table.name, safe='')}{suffix}"
    return url + ("?" + urlencode(params) if params else "")


def row_url(table: TableInfo, key: list[str], suffix: str = "/row") -> str:
    return table_url(table, suffix, [("k", value) for value in key])


def _status(error: GatehouseError) -> int:
    return error.status if 400 <= error.status < 600 else 400


def _not_found(request: Request, current: Visit, message: str = "No such table in the exposed schemas.") -> Response:
    return render(request, current, "error.html", status=404, title="Not found", message=message, section="data")


def _table(request: Request) -> TableInfo | None:
    schema, name = request.path_params["schema"], request.path_params["table"]
    if schema in HIDDEN_SCHEMAS or schema not in services(request).settings.exposed_schemas:
        return None
    return services(request).schema_cache.table(schema, name)


async def _visit(request: Request) -> tuple[Visit, TableInfo] | Response:
    """A signed-in administrator and the path's table, or the response to send instead (a 404 for a
    table the data API does not expose)."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    table = _table(request)
    if table is None:
        return _not_found(request, current)
    return current, table


def _rows(request: Request, table: TableInfo) -> Rows:
    return Rows(services(request).database, services(request).schema_cache, table)


async def _posted(request: Request, current: Visit, table: TableInfo) -> dict[str, str] | None:
    """The posted form (two fields per column at most) if its CSRF token is this visitor's."""
    form = await request.form(max_files=0, max_fields=2 * len(table.columns) + 8)
    data = {key: value for key, value in form.items() if isinstance(value, str)}
    if csrf_matches(current.csrf, data.get("csrf")) or csrf_matches(current.csrf, request.headers.get(CSRF_HEADER)):
        return data
    return None


async def _audit(request: Request, current: Visit, action: str, table: TableInfo, key: list[str],
                 columns: list[str]) -> None:
    assert current.session is not None
    await audit.record(dashboard(request).accounts.pool, current.session.admin.id, action, ip=client_ip(request),
                       target=f"{table.schema}.{table.name}",
                       detail={"schema": table.schema, "table": table.name,
                               "key": dict(zip(table.primary_key, key, strict=True)), "columns": columns})


# -- the tables --------------------------------------------------------------------------------------


async def list_tables(request: Request) -> Response:
    """``GET /_/data``: every relation of the exposed schemas, unprotected tables first in a warning."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    schemas = tuple(s for s in services(request).settings.exposed_schemas if s not in HIDDEN_SCHEMAS)
    found = await data_catalog.tables(services(request).database, services(request).schema_cache, schemas)
    cache = services(request).schema_cache
    listed = [(summary, cache.table(summary.schema, summary.name) is not None) for summary in found]
    by_schema = [(schema, [item for item in listed if item[0].schema == schema]) for schema in schemas]
    return render(request, current, "data_tables.html", by_schema=by_schema, section="data",
                  unprotected=[summary for summary in found if summary.unprotected],
                  url=lambda s: f"/_/data/{quote(s.schema, safe='')}/{quote(s.name, safe='')}")


async def show_table(request: Request) -> Response:
    """``GET /_/data/{schema}/{table}``: columns, policies and the rows grid (only the grid for htmx)."""
    got = await _visit(request)
    if isinstance(got, Response):
        return got
    current, table = got
    details = await data_catalog.details(services(request).database, services(request).schema_cache, table.schema,
                                         table.name)
    if details is None:
        return _not_found(request, current)
    params = request.query_params
    grid, viewer, page, error, status = GridQuery(), ADMIN, None, "", 200
    try:
        grid = GridQuery.parse([(k, v) for k, v in params.multi_items() if k != "as"])
        viewer = await find_viewer(dashboard(request).users, params.get("as", "")[:320])
        page = await _rows(request, table).page(grid, viewer, count=details.summary.exact is not None)
    except GatehouseError as failure:
        error, status = failure.message, _status(failure)
    as_items = [("as", viewer.param)] if viewer.param else []
    links = {"previous": table_url(table, "", grid.items(max(grid.offset - PAGE_SIZE, 0)) + as_items)
             if grid.offset else None,
             "next": table_url(table, "", grid.items(grid.offset + PAGE_SIZE) + as_items) if page and page.more else None}
    rows = [(row_url(table, key_of(table, row)) if table.primary_key and not viewer.read_only else None,
             [cell(row.get(name)) for name in table.columns]) for row in (page.rows if page else [])]
    partial = request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "grid"
    return render(request, current, "_data_grid.html" if partial else "data_table.html", status=status,
                  table=table, details=details, grid=grid, viewer=viewer, page=page, rows=rows, links=links,
                  error=error, operators=OPERATORS, page_size=PAGE_SIZE, as_param=viewer.param,
                  filter_rows=[*grid.filters, *([FilterSpec("", "eq")] if len(grid.filters) < MAX_FILTERS else [])],
                  relationships=services(request).schema_cache.relationships(table.schema, table.name),
                  table_url=table_url(table), new_url=table_url(table, "/new"), section="data")


# -- one row -------------------------------------------------------------------------------------------


def _fields(table: TableInfo, row: dict[str, Any] | None, data: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The form's fields, one per settable column: its text and NULL box from the posted form
    when it is shown again, else from the row (an empty form for an insert)."""
    fields = []
    for index, column in enumerate(editable(table)):
        if data is not None:
            text, null = data.get(f"c{index}", ""), data.get(f"n{index}") == "yes"
        else:
            value = row.get(column.name) if row is not None else None
            text, null = as_text(value), row is not None and value is None
        fields.append({"index": index, "column": column, "text": text, "null": null,
                       "long": is_json(column) or "\n" in text or len(text) > 80,
                       "key": column.name in table.primary_key})
    return fields


def _changes(table: TableInfo, row: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    """The columns the form changes, with their new values; a field left out changes nothing."""
    changes: dict[str, Any] = {}
    for index, column in enumerate(editable(table)):
        if f"c{index}" not in data and f"n{index}" not in data:
            continue
        current = row.get(column.name)
        if data.get(f"n{index}") == "yes":
            if current is not None:
                changes[column.name] = None
            continue
        # A browser sends a textarea's line ends as CRLF: saved as LF, and no change by themselves.
        value = parse_value(column, data.get(f"c{index}", "").replace("\r\n", "\n"))
        same = value == current if is_json(column) else value == as_text(current).replace("\r\n", "\n")
        if current is None or not same:
            changes[column.name] = value
    return changes


def _key(request: Request) -> list[str]:
    return request.query_params.getlist("k")


async def edit_row(request: Request) -> Response:
    """``GET``/``POST /_/data/{schema}/{table}/row?k=...``: one row's form; saving writes the columns it changed."""
    got = await _visit(request)
    if isinstance(got, Response):
        return got
    current, table = got
    data = await _posted(request, current, table) if request.method == "POST" else None
    if request.method == "POST" and data is None:
        return refused(request, current)
    rows, key = _rows(request, table), _key(request)
    context: dict[str, Any] = {"table": table, "table_url": table_url(table), "section": "data",
                               "action": row_url(table, key), "delete_url": row_url(table, key, "/delete")}
    try:
        row = await rows.row(key)
    except GatehouseError as error:
        return _not_found(request, current, error.message) if error.status in (404, 409) else render(
            request, current, "error.html", status=_status(error), title="Not a row", message=error.message)
    if row is None:
        return _not_found(request, current, "No such row (it may have been deleted).")
    if data is None:
        return render(request, current, "data_row.html", fields=_fields(table, row), **context)
    try:
        changes = _changes(table, row, data)
        if changes and not await rows.update(key, changes):
            return _not_found(request, current, "No such row (it may have been deleted).")
    except GatehouseError as error:
        return render(request, current, "data_row.html", status=_status(error), error=error.message,
                      fields=_fields(table, row, data), **context)
    if not changes:
        return render(request, current, "data_row.html", notice="Nothing changed.", fields=_fields(table, row),
                      **context)
    await _audit(request, current, "data_update", table, key, sorted(changes))
    # A changed key names the row anew: read it back by its new key.
    new_key = [as_text(changes[name]) if name in changes else value for name, value in zip(table.primary_key, key,
                                                                                              strict=True)]
    saved = await rows.row(new_key)
    context.update(action=row_url(table, new_key), delete_url=row_url(table, new_key, "/delete"))
    return render(request, current, "data_row.html", notice="Saved: " + ", ".join(sorted(changes)) + ".",
                  fields=_fields(table, saved), **context)


async def new_row(request: Request) -> Response:
    """``GET``/``POST /_/data/{schema}/{table}/new``: insert one row; blank fields take their defaults."""
    got = await _visit(request)
    if isinstance(got, Response):
        return got
    current, table = got
    context: dict[str, Any] = {"table": table, "table_url": table_url(table), "section": "data",
                               "action": table_url(table, "/new")}
    if not table.primary_key or not table.insertable:
        return render(request, current, "error.html", status=409, title="Read-only", section="data",
                      message="Rows are inserted here only into tables with a primary key.")
    if request.method == "GET":
        return render(request, current, "data_new.html", fields=_fields(table, None), **context)
    data = await _posted(request, current, table)
    if data is None:
        return refused(request, current)
    try:
        values: dict[str, Any] = {}
        for index, column in enumerate(editable(table)):
            if data.get(f"n{index}") == "yes":
                values[column.name] = None
            elif data.get(f"c{index}", ""):
                values[column.name] = parse_value(column, data[f"c{index}"])
        inserted = await _rows(request, table).insert(values)
    except GatehouseError as error:
        return render(request, current, "data_new.html", status=_status(error), error=error.message,
                      fields=_fields(table, None, data), **context)
    key = key_of(table, inserted)
    await _audit(request, current, "data_insert", table, key, sorted(values))
    saved = await _rows(request, table).row(key)
    return render(request, current, "data_row.html", notice="Row inserted.", fields=_fields(table, saved),
                  **{**context, "action": row_url(table, key), "delete_url": row_url(table, key, "/delete")})


async def delete_row(request: Request) -> Response:
    """``POST /_/data/{schema}/{table}/delete?k=...``: asks first, then deletes the row."""
    got = await _visit(request)
    if isinstance(got, Response):
        return got
    current, table = got
    data = await _posted(request, current, table)
    if data is None:
        return refused(request, current)
    key, rows = _key(request), _rows(request, table)
    try:
        if data.get("confirmed") != "yes":
            row = await rows.row(key)
            if row is None:
                raise bad("No such row (it may have been deleted already).", 404)
            return render(request, current, "confirm.html", section="data", button="Yes, delete it",
                          action=row_url(table, key, "/delete"), cancel=row_url(table, key),
                          question=f"Delete the row of {table.schema}.{table.name} whose "
                          + ", ".join(f"{n} is {v}" for n, v in zip(table.primary_key, key, strict=True))
                          + "? This cannot be undone.")
        if not await rows.delete(key):
            raise bad("No such row (it may have been deleted already).", 404)
    except GatehouseError as error:
        return render(request, current, "error.html", status=_status(error), title="Not deleted", section="data",
                      message=error.message)
    await _audit(request, current, "data_delete", table, key, [])
    return render(request, current, "data_done.html", table=table, table_url=table_url(table), section="data",
                  notice="Row deleted.")
