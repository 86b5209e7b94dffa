"""The actions on one user, each a POST from the user's page carrying the CSRF token.

Every action calls the service function its admin API route calls (``AdminService`` for
``/admin/users``, ``MFAFlow.delete_for_admin`` for a factor) or, for the reset and magic-link
mails, the public flow that ``/recover`` and ``/magiclink`` run, so the mail goes through the
outbox as any other. Input is checked before the service is called; a domain error, or a change
the database refuses (a foreign key of an app table, say), is shown on the page with its 4xx
status, and nothing is half done because each action is one service call in one transaction.
Ban, sign-out everywhere and delete first answer with a confirmation step (the same form again
with ``confirmed=yes``). Once the change has committed, one audit row names the administrator,
the action and the user, with what changed but never a password, a link or a metadata value.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.auth.admin import AdminService, parse_ban_duration
from gatehouse.auth.flows.base import Client
from gatehouse.auth.forms import AdminUserForm, InviteForm, OtpForm, RecoverForm, parse
from gatehouse.auth.models import User
from gatehouse.core.errors import GatehouseError
from gatehouse.core.sqlstate import http_status
from gatehouse.dashboard import audit
from gatehouse.dashboard.pages import Visit, client_ip, dashboard, render, signed_in, signed_in_form
from gatehouse.services import services

MAX_METADATA = 16_384
MAX_DEPTH = 16


def bad(message: str, status: int = 400) -> GatehouseError:
    return GatehouseError("validation_failed", message, status=status)


@dataclass(frozen=True)
class Outcome:
    """What an action did: the message for the page, the audit detail, and whether the user is gone."""

    notice: str
    detail: dict[str, Any] = field(default_factory=dict)
    gone: bool = False


class ConfirmFirst(Exception):
    """The action is destructive and the form did not carry ``confirmed=yes`` yet."""

    def __init__(self, question: str) -> None:
        super().__init__(question)
        self.question = question


@dataclass(frozen=True)
class Context:
    request: Request
    user: User
    data: dict[str, str]

    @property
    def admin(self) -> AdminService:
        return dashboard(self.request).users

    @property
    def client(self) -> Client:
        return Client(ip=client_ip(self.request), user_agent=self.request.headers.get("user-agent", ""))

    def text(self, name: str, limit: int) -> str:
        value = self.data.get(name, "").strip()
        if len(value) > limit:
            raise bad(f"{name} is longer than {limit} characters")
        return value

    def confirm(self, question: str) -> None:
        if self.data.get("confirmed") != "yes":
            raise ConfirmFirst(question)

    def mailable(self) -> str:
        """The user's address, if mail may go to it (a confirmed, non-anonymous email user)."""
        if not self.user.email or self.user.email_confirmed_at is None:
            raise bad("This user has no confirmed email address: invite or confirm them first.", 409)
        return self.user.email


Action = Callable[[Context], Awaitable[Outcome]]


# -- the actions ------------------------------------------------------------------------------


async def confirm_email(ctx: Context) -> Outcome:
    if not ctx.user.email:
        raise bad("This user has no email address to confirm.", 409)
    await ctx.admin.update_user(ctx.user.id, AdminUserForm(email_confirm=True), ctx.client)
    return Outcome("Email address confirmed.")


async def send_recovery(ctx: Context) -> Outcome:
    email = ctx.mailable()
    await services(ctx.request).auth.recovery.recover(RecoverForm(email=email), ctx.client, None)
    return Outcome(f"A password-reset link was sent to {email}.")


async def send_magic_link(ctx: Context) -> Outcome:
    email = ctx.mailable()
    await services(ctx.request).auth.verification.send_otp(OtpForm(email=email, create_user=False), ctx.client, None)
    return Outcome(f"A magic link was sent to {email}.")


async def ban(ctx: Context) -> Outcome:
    duration = ctx.text("duration", 32)
    if not duration or duration == "none":
        raise bad("Give a duration such as 24h, 90m or 720h.")
    parse_ban_duration(duration)  # refuses garbage, negatives and more than 100 years before asking
    ctx.confirm(f"Ban this user for {duration}? They are signed out everywhere now.")
    user = await ctx.admin.update_user(ctx.user.id, parse(AdminUserForm, {"ban_duration": duration}), ctx.client)
    until = user.banned_until
    shown = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if until else "now"
    return Outcome(f"Banned until {shown}.", {"duration": duration, "until": until.isoformat() if until else None})


async def unban(ctx: Context) -> Outcome:
    await ctx.admin.update_user(ctx.user.id, AdminUserForm(ban_duration="none"), ctx.client)
    return Outcome("The ban is lifted.")


async def sign_out(ctx: Context) -> Outcome:
    ctx.confirm("Sign this user out everywhere? Every session and refresh token ends now.")
    ended = await ctx.admin.sign_out(ctx.user.id, ctx.client)
    return Outcome(f"Signed out everywhere ({ended} session{'s' if ended != 1 else ''} ended).", {"sessions": ended})


async def remove_factor(ctx: Context) -> Outcome:
    factor_id = ctx.request.path_params["factor_id"]
    removed = await services(ctx.request).auth.mfa.delete_for_admin(ctx.user.id, factor_id, ctx.client)
    return Outcome(f"The {removed.factor_type} factor was removed.",
                   {"factor_id": removed.id, "factor_type": removed.factor_type})


async def delete(ctx: Context) -> Outcome:
    mode = ctx.data.get("mode", "")
    if mode not in ("soft", "hard"):
        raise bad("Choose a soft or a hard delete.")
    if mode == "hard":
        ctx.confirm("Delete this user for good? The row, identities, factors and sessions are removed.")
    else:
        ctx.confirm("Soft-delete this user? The row stays, marked deleted; the address is freed, sessions end.")
    await ctx.admin.delete_user(ctx.user.id, soft=mode == "soft", client=ctx.client)
    return Outcome(f"The user was {'soft-' if mode == 'soft' else ''}deleted.", {"mode": mode}, gone=True)


def _check_json(value: Any, depth: int = 0) -> None:
    """Refuse what PostgreSQL's jsonb would refuse (NUL in text) and nesting deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise bad(f"app_metadata is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str) and "\x00" in value:
        raise bad("app_metadata may not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, depth + 1)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def parse_metadata(text: str) -> dict[str, Any]:
    """A JSON object of at most MAX_METADATA characters, or a 400 saying what is wrong."""
    if len(text) > MAX_METADATA:
        raise bad(f"app_metadata is larger than {MAX_METADATA} characters", 413)
    try:
        value = json.loads(text or "{}", parse_float=_finite, parse_constant=_finite)
    except (ValueError, RecursionError):
        raise bad("app_metadata is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad("app_metadata must be a JSON object ({...})")
    _check_json(value)
    return value


async def edit_app_metadata(ctx: Context) -> Outcome:
    wanted = parse_metadata(ctx.data.get("app_metadata", ""))
    old = ctx.user.app_metadata
    removed = sorted(key for key in old if key not in wanted or wanted[key] is None)
    changed = sorted(key for key, value in wanted.items() if value is not None and old.get(key) != value)
    # The admin API merges top-level keys and drops those set to null: naming every key that went
    # away as null makes the merge a replacement.
    form = AdminUserForm(app_metadata={**{key: None for key in old}, **wanted})
    await ctx.admin.update_user(ctx.user.id, form, ctx.client)
    return Outcome("App metadata saved.", {"changed": changed, "removed": removed})


ACTIONS: dict[str, Action] = {
    "confirm": confirm_email, "recovery": send_recovery, "magiclink": send_magic_link, "ban": ban,
    "unban": unban, "signout": sign_out, "delete": delete, "app_metadata": edit_app_metadata,
}


# -- pages ------------------------------------------------------------------------------------


def not_found(request: Request, current: Visit) -> Response:
    return render(request, current, "error.html", status=404, title="Not found", message="No such user.")


async def show_user(request: Request, current: Visit, user: User, *, status: int = 200, notice: str = "",
                    error: str = "", app_metadata: str | None = None) -> Response:
    users = dashboard(request).users
    return render(request, current, "user.html", status=status, user=user, sessions=await users.user_sessions(user.id),
                  events=await users.user_events(user.id), section="users", notice=notice, error=error,
                  app_metadata_text=app_metadata)


def refused_by_database(error: asyncpg.PostgresError) -> GatehouseError:
    """A change the database refused, such as a hard delete that an app table's foreign key
    (without ``ON DELETE CASCADE``) forbids; the server's own faults are raised on."""
    status = http_status(error.sqlstate, anonymous=False)
    if status >= 500:
        raise error
    return GatehouseError("refused", f"The database refused: {error}", status=status)


def _status(error: GatehouseError) -> int:
    return error.status if 400 <= error.status < 500 else 400


async def act(request: Request) -> Response:
    """``POST /_/users/{id}/{action}`` (and ``.../factors/{factor_id}/remove``)."""
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    assert current.session is not None
    name = request.path_params.get("action", "remove_factor")
    run = ACTIONS.get(name) if "action" in request.path_params else remove_factor
    try:
        user_id = uuid.UUID(request.path_params["user_id"])
        user = await dashboard(request).users.get_user(user_id)
    except (ValueError, GatehouseError):
        return not_found(request, current)
    if run is None:
        return render(request, current, "error.html", status=404, title="Not found", message="No such action.")
    ctx = Context(request, user, data)
    try:
        outcome = await run(ctx)
    except ConfirmFirst as step:
        fields = {k: v for k, v in data.items() if k not in ("csrf", "confirmed")}
        return render(request, current, "confirm.html", question=step.question, action=request.url.path,
                      fields=fields, about=user.email or str(user.id), cancel=f"/_/users/{user.id}",
                      section="users")
    except (GatehouseError, asyncpg.PostgresError) as error:
        if isinstance(error, asyncpg.PostgresError):
            error = refused_by_database(error)
        kept = data.get("app_metadata") if name == "app_metadata" else None
        return await show_user(request, current, user, status=_status(error), error=error.message,
                               app_metadata=kept)
    await audit.record(dashboard(request).accounts.pool, current.session.admin.id, f"user_{name}",
                       ip=client_ip(request), target=str(user.id), detail=outcome.detail)
    if outcome.gone:
        return render(request, current, "gone.html", user=user, notice=outcome.notice, section="users")
    return await show_user(request, current, await dashboard(request).users.get_user(user.id), notice=outcome.notice)


# -- a new user -------------------------------------------------------------------------------


async def new_user(request: Request) -> Response:
    """``GET /_/users/new``: the create and invite forms; ``POST`` with ``kind`` create or invite."""
    if request.method == "GET":
        current = await signed_in(request)
        if isinstance(current, Response):
            return current
        return render(request, current, "user_new.html", section="users", email="", error="")
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    assert current.session is not None
    admin, kind = dashboard(request).users, data.get("kind", "")
    email = data.get("email", "").strip()
    client = Client(ip=client_ip(request), user_agent=request.headers.get("user-agent", ""))
    try:
        if len(email) > 255:
            raise bad("The email address is longer than 255 characters")
        if kind == "create":
            password = data.get("password", "")
            form = parse(AdminUserForm, {"email": email, "password": password or None,
                                         "email_confirm": data.get("email_confirm") == "yes"})
            user = await admin.create_user(form, client)
            notice = "User created."
            detail: dict[str, Any] = {"email": user.email, "confirmed": bool(form.email_confirm),
                                      "password_set": bool(password)}
        elif kind == "invite":
            user = await admin.invite(parse(InviteForm, {"email": email}), client, None)
            notice, detail = f"An invitation was sent to {user.email}.", {"email": user.email}
        else:
            raise bad("Choose create or invite.")
    except GatehouseError as error:
        return render(request, current, "user_new.html", status=_status(error), section="users", email=email,
                      error=error.message)
    await audit.record(dashboard(request).accounts.pool, current.session.admin.id, f"user_{kind}",
                       ip=client_ip(request), target=str(user.id), detail=detail)
    return await show_user(request, current, user, notice=notice)
