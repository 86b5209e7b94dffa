"""The overview and the users pages: search, filters, keyset paging, one user's details.

All reads go through ``AdminService`` (the admin API's service); search-as-you-type and paging
fetch only the results table (an htmx request gets ``_users_table.html``), and every state is a
plain link as well, so the pages work without script.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.auth.listing import FILTERS, Cursor, UserQuery
from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard import audit
from gatehouse.dashboard.pages import dashboard, render, signed_in
from gatehouse.mail.outbox import backlog

PAGE_SIZE = 50
FILTER_LABELS = {"unconfirmed": "Unconfirmed", "banned": "Banned", "anonymous": "Anonymous", "mfa": "Has MFA"}


async def overview(request: Request) -> Response:
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    dash = dashboard(request)
    figures = await dash.users.user_figures()
    outbox = await backlog(dash.accounts.pool)
    events = await audit.latest(dash.accounts.pool, 10)
    return render(request, current, "overview.html", figures=figures, outbox=outbox, events=events, section="overview")


def _query(request: Request) -> UserQuery:
    params = request.query_params
    filters = frozenset(params.getlist("filter"))
    after, before = params.get("after"), params.get("before")
    return UserQuery(
        search=params.get("q", ""), filters=filters, limit=PAGE_SIZE,
        after=Cursor.decode(after) if after else None, before=Cursor.decode(before) if before else None,
    )


async def list_users(request: Request) -> Response:
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    try:
        query = _query(request)
    except GatehouseError as error:
        return render(request, current, "error.html", status=400, title="Not a search", message=error.message)
    page = await dashboard(request).users.search_users(query)
    base = [("q", query.search)] + [("filter", name) for name in sorted(query.filters)]
    links = {
        "next": "/_/users?" + urlencode([*base, ("after", page.next)]) if page.next else None,
        "previous": "/_/users?" + urlencode([*base, ("before", page.previous)]) if page.previous else None,
    }
    partial = request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "results"
    return render(request, current, "_users_table.html" if partial else "users.html", page=page, query=query,
                  links=links, filters=FILTER_LABELS, known=FILTERS, section="users")


async def user_detail(request: Request) -> Response:
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    try:
        user_id = uuid.UUID(request.path_params["user_id"])
    except ValueError:
        return render(request, current, "error.html", status=404, title="Not found", message="No such user.")
    users = dashboard(request).users
    try:
        user = await users.get_user(user_id)
    except GatehouseError:
        return render(request, current, "error.html", status=404, title="Not found", message="No such user.")
    return render(request, current, "user.html", user=user, sessions=await users.user_sessions(user_id),
                  events=await users.user_events(user_id), section="users")
