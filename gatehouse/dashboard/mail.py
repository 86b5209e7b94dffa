"""The Mail section: the outbox (by status, a page at a time, each message with its attempts and
the SMTP server's answers), retry and cancel, previews of the email templates, and a test email.

Every change goes through the outbox's own functions (``outbox.retry``, ``outbox.cancel``,
``outbox.enqueue``, as every other email does) and is written to the audit log. Cancelling asks
for a confirmation first.

Bodies of queued mail are not shown, except the dashboard's own test emails: an auth email's body
holds a live sign-in link or code, a credential an administrator has no use for and a screen or
a screenshot must not show. Subjects have runs of six or more digits masked for the same reason
(a template may put the code there). What a kind of email looks like is on its template preview,
rendered with sample data by the renderer the auth flows use and shown in a sandboxed iframe
(``sandbox=""``: no script, no same-origin access), so template HTML never runs as the dashboard.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from jinja2 import TemplateError
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.auth.forms import normalize_email
from gatehouse.core.errors import GatehouseError
from gatehouse.dashboard import audit
from gatehouse.dashboard.pages import Visit, client_ip, dashboard, redirect, render, signed_in, signed_in_form
from gatehouse.mail import listing, outbox
from gatehouse.mail.outbox import OutboxEntry, backlog, delivery_log, enqueue
from gatehouse.mail.render import KINDS, Templates
from gatehouse.services import services

PAGE_SIZE = 50
#: Kinds whose body holds no credential, and so is shown.
SHOWN_BODIES = frozenset({"test"})
_ID = re.compile(r"^[1-9][0-9]{0,17}$")
_DIGITS = re.compile(r"[0-9]{6,}")
_MASK = "\u2022" * 6
#: What a change says on the message's page it redirects to (``?done=``): fixed texts, never echoed input.
DONE = {
    "retry": "The message is due now: a sender takes it within seconds.",
    "cancel": "The message is cancelled: it will not be sent.",
    "test": "The test email is in the outbox: a sender takes it within seconds.",
}


def masked_subject(entry: OutboxEntry) -> str:
    return entry.subject if entry.kind in SHOWN_BODIES else _DIGITS.sub(_MASK, entry.subject)


def _outbox_id(text: str) -> int | None:
    return int(text) if _ID.match(text) else None


def _cursor(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    found = _outbox_id(text)
    if found is None:
        raise GatehouseError("validation_failed", "That is not a page of the outbox.", status=400)
    return found


def templates(request: Request) -> Templates:
    """The renderer the auth flows use (with GATEHOUSE_MAIL_TEMPLATES_DIR's overrides)."""
    return services(request).auth.deps.templates


async def outbox_page(request: Request) -> Response:
    """``GET /_/mail``: the outbox, newest first, ``status=`` to filter, ``before=``/``after=`` to page."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    return await _show_outbox(request, current)


async def _show_outbox(request: Request, current: Visit, *, status_code: int = 200, error: str = "",
                       test_to: str = "") -> Response:
    params = request.query_params if request.method == "GET" else {}
    status = params.get("status") or None
    try:
        if status is not None and status not in listing.STATUSES:
            raise GatehouseError("validation_failed", "There is no such status.", status=400)
        before, after = _cursor(params.get("before")), _cursor(params.get("after"))
    except GatehouseError as problem:
        return render(request, current, "error.html", status=400, title="Not a page of the outbox",
                      message=problem.message)
    pool = dashboard(request).accounts.pool
    found = await listing.page(pool, status=status, before=before, after=after, limit=PAGE_SIZE)
    base = [("status", status)] if status else []
    links = {
        "older": "/_/mail?" + urlencode([*base, ("before", found.older)]) if found.older else None,
        "newer": "/_/mail?" + urlencode([*base, ("after", found.newer)]) if found.newer else None,
    }
    return render(
        request, current, "mail_outbox.html", status=status_code, section="mail", page=found, links=links,
        chosen=status, statuses=listing.STATUSES, subject=masked_subject, backlog=await backlog(pool),
        failed=await listing.failed_count(pool), kinds=[kind for kind in KINDS],
        smtp=services(request).settings.smtp_host, error=error, test_to=test_to,
    )


async def _show_message(request: Request, current: Visit, entry: OutboxEntry, *, status: int = 200,
                        notice: str = "", error: str = "") -> Response:
    attempts = await delivery_log(dashboard(request).accounts.pool, entry.id)
    return render(request, current, "mail_message.html", status=status, section="mail", entry=entry,
                  attempts=attempts, subject=masked_subject(entry), body_shown=entry.kind in SHOWN_BODIES,
                  notice=notice, error=error)


def _not_found(request: Request, current: Visit) -> Response:
    return render(request, current, "error.html", status=404, title="Not found", message="No such message.")


async def message_page(request: Request) -> Response:
    """``GET /_/mail/{outbox_id}``: one message, its attempts and the server's answers."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    outbox_id = _outbox_id(request.path_params["outbox_id"])
    entry = await listing.message(dashboard(request).accounts.pool, outbox_id) if outbox_id else None
    if entry is None:
        return _not_found(request, current)
    return await _show_message(request, current, entry, notice=DONE.get(request.query_params.get("done", ""), ""))


async def change(request: Request) -> Response:
    """``POST /_/mail/{outbox_id}/retry`` and ``.../cancel`` (cancel asks first)."""
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    assert current.session is not None
    pool = dashboard(request).accounts.pool
    outbox_id = _outbox_id(request.path_params["outbox_id"])
    entry = await listing.message(pool, outbox_id) if outbox_id else None
    action = request.path_params["action"]
    if entry is None or action not in ("retry", "cancel"):
        return _not_found(request, current)
    if action == "cancel" and data.get("confirmed") != "yes":
        return render(request, current, "confirm.html", section="mail", action=request.url.path,
                      about=f"Message #{entry.id} to {entry.to}: {masked_subject(entry)}",
                      button="Yes, cancel it", cancel=f"/_/mail/{entry.id}", cancel_label="Keep it",
                      question="Cancel this message? It will never be sent; the record stays in the outbox.")
    async with pool.acquire() as conn, conn.transaction():  # the change and its audit row, or neither
        done = await (outbox.retry(conn, entry.id) if action == "retry" else outbox.cancel(conn, entry.id))
        if done:
            await audit.record(conn, current.session.admin.id, f"mail_{action}", ip=client_ip(request),
                               target=str(entry.id), detail={"kind": entry.kind, "to": entry.to, "was": entry.status})
    if not done:
        now = await listing.message(pool, entry.id) or entry
        what = "retried" if action == "retry" else "cancelled"
        return await _show_message(request, current, now, status=409,
                                   error=f"A message that is {now.status} cannot be {what}.")
    return redirect(current, f"/_/mail/{entry.id}?done={action}")  # a reload shows the page, never posts again


async def send_test(request: Request) -> Response:
    """``POST /_/mail/test``: queue the ``test`` email to an address, through the outbox."""
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    assert current.session is not None
    typed = data.get("to", "")[:320]
    try:
        to = normalize_email(typed)
        assert to is not None
        message = templates(request).message("test", to)
    except GatehouseError as problem:
        return await _show_outbox(request, current, status_code=400, error=problem.message, test_to=typed)
    except TemplateError as problem:
        return await _show_outbox(request, current, status_code=422, test_to=typed,
                                  error=f"The test template cannot be rendered: {problem}")
    pool = dashboard(request).accounts.pool
    async with pool.acquire() as conn, conn.transaction():
        outbox_id = await enqueue(conn, message)
        await audit.record(conn, current.session.admin.id, "mail_test", ip=client_ip(request),
                           target=str(outbox_id), detail={"to": to})
    return redirect(current, f"/_/mail/{outbox_id}?done=test")


def sample(request: Request) -> dict[str, str]:
    """What the previews fill the templates with: an example person, link and code, never a real one."""
    site = services(request).settings.public_site_url
    return {
        "email": "ada@example.com", "new_email": "ada.lovelace@example.com", "token": "123456",
        "token_hash": "sample-token-hash", "link_type": "email",
        "action_url": f"{site}/auth/v1/verify?token=sample-token-hash&type=email&redirect_to={site}",
    }


async def template_page(request: Request) -> Response:
    """``GET /_/mail/templates/{kind}``: one kind rendered with sample data: subject, text, HTML."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    kind = request.path_params["kind"]
    if kind not in KINDS:
        return render(request, current, "error.html", status=404, title="Not found", message="No such template.")
    try:
        subject, text, html = templates(request).render(kind, **sample(request))
    except TemplateError as problem:
        return render(request, current, "error.html", status=422, title="This template cannot be rendered",
                      message=str(problem))
    return render(request, current, "mail_template.html", section="mail", kind=kind, kinds=KINDS, subject=subject,
                  text=text, html=html)
