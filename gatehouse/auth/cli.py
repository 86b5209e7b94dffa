"""``gatehouse users ...``: the admin API from the command line, through the same service."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from gatehouse.auth import users
from gatehouse.auth.admin import AdminService
from gatehouse.auth.forms import AdminUserForm
from gatehouse.auth.service import AuthService, Client
from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet
from gatehouse.mail.render import Templates

CLI_CLIENT = Client(ip="cli", user_agent="gatehouse-cli")


async def _with_admin(url: str, keys: KeySet, settings: Settings, work: Callable[[AdminService], Awaitable[int]]) -> int:
    database = Database(url, keys, settings)
    await database.open()
    auth = AuthService(database, settings, keys, Templates(settings))
    try:
        return await work(AdminService(auth))
    finally:
        auth.close()
        await database.close()


async def _resolve(admin: AdminService, who: str) -> uuid.UUID:
    """A user id from an id or an email address."""
    try:
        return uuid.UUID(who)
    except ValueError:
        pass
    row = await users.by_email(admin.db.admin, who.strip().lower())
    if row is None:
        raise GatehouseError("user_not_found", f"no user with the email {who}", status=404)
    return row["id"]  # type: ignore[no-any-return]


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if args.password is not None:
        return str(args.password)
    if sys.stdin.isatty():
        entered = getpass.getpass("Password (empty: none, the user signs in by email link): ")
        return entered or None
    return None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s``: seconds (for argparse)."""
    value, unit = text[:-1], text[-1:].lower()
    if unit not in _UNITS or not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 30d, 12h, 90m or 3600s")
    return float(int(value) * _UNITS[unit])


def _age(seconds: float) -> str:
    """Seconds back in the largest unit that divides them: 2592000 -> 30d."""
    unit = next(u for u in ("d", "h", "m", "s") if seconds % _UNITS[u] == 0)
    return f"{int(seconds // _UNITS[unit])}{unit}"


def run(args: argparse.Namespace, url: str, keys: KeySet, settings: Settings) -> int:
    async def list_users(admin: AdminService) -> int:
        found, total = await admin.list_users(args.page, args.per_page)
        print(f"{'id':36}  {'email':40}  {'confirmed':9}  created")
        for user in found:
            confirmed = "yes" if user.email_confirmed_at else "no"
            created = user.created_at.isoformat()[:19] if user.created_at else ""
            print(f"{user.id!s:36}  {user.email:40}  {confirmed:9}  {created}")
        print(f"({len(found)} of {total} users)")
        return 0

    async def create(admin: AdminService) -> int:
        form = AdminUserForm(email=args.email, password=_password(args), email_confirm=args.confirm)
        user = await admin.create_user(form, CLI_CLIENT)
        print(user.id)
        return 0

    async def delete(admin: AdminService) -> int:
        await admin.delete_user(await _resolve(admin, args.user), soft=args.soft, client=CLI_CLIENT)
        print(f"deleted {args.user}")
        return 0

    async def confirm(admin: AdminService) -> int:
        user_id = await _resolve(admin, args.user)
        await admin.update_user(user_id, AdminUserForm(email_confirm=True), CLI_CLIENT)
        print(f"confirmed {args.user}")
        return 0

    async def prune_anonymous(admin: AdminService) -> int:
        removed = await admin.prune_anonymous(args.older_than, CLI_CLIENT)
        print(f"deleted {removed} anonymous user{'' if removed == 1 else 's'} not seen for {_age(args.older_than)}")
        return 0

    actions: dict[str, Callable[[AdminService], Awaitable[int]]] = {
        "list": list_users, "create": create, "delete": delete, "confirm": confirm,
        "prune-anonymous": prune_anonymous,
    }
    return asyncio.run(_with_admin(url, keys, settings, actions[args.users_command]))


def add_parser(commands: Any, data_dir_option: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "users", help="list, create, delete and confirm users",
        description="Manage users directly in the database, as the admin API does.",
    )
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="list users, oldest first")
    listing.add_argument("--page", type=int, default=1, help="page number (default 1)")
    listing.add_argument("--per-page", type=int, default=50, help="users per page (default 50)")
    create = sub.add_parser("create", help="create a user")
    create.add_argument("email")
    create.add_argument("--password", help="the password (visible to other local users: prefer --password-stdin)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.add_argument("--confirm", action="store_true", help="mark the email address as confirmed")
    delete = sub.add_parser("delete", help="delete a user (by email or id)")
    delete.add_argument("user", help="email address or user id")
    delete.add_argument("--soft", action="store_true", help="keep the row, free the address and end access")
    confirm = sub.add_parser("confirm", help="mark a user's email address as confirmed")
    confirm.add_argument("user", help="email address or user id")
    prune = sub.add_parser("prune-anonymous", help="delete anonymous users not seen for a while (and their files)")
    prune.add_argument("--older-than", type=duration, required=True, metavar="AGE",
                       help="how long since their last sign-in: 30d, 12h, 90m or 3600s")
    for action in (listing, create, delete, confirm, prune):
        data_dir_option(action)
    return parser  # type: ignore[no-any-return]
