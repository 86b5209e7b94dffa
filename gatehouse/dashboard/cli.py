"""``gatehouse admin create EMAIL``: a dashboard administrator from the command line, and the
one-time set-up link ``gatehouse serve`` prints in development while there is none."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from typing import Any

import asyncpg

from gatehouse.auth.admin import AdminService
from gatehouse.auth.service import AuthService
from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet
from gatehouse.dashboard.accounts import issue_setup_token
from gatehouse.dashboard.service import Dashboard
from gatehouse.mail.render import Templates


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise GatehouseError("validation_failed", "no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("The same password again: ") != first:
        raise GatehouseError("validation_failed", "the two passwords differ")
    return first


def run(args: argparse.Namespace, url: str, keys: KeySet, settings: Settings) -> int:
    password = _password(args)

    async def create() -> int:
        database = Database(url, keys, settings)
        await database.open()
        auth = AuthService(database, settings, keys, Templates(settings))
        try:
            dashboard = Dashboard(AdminService(auth), keys)
            admin = await dashboard.accounts.create(args.email, password, ip="cli")
        finally:
            auth.close()
            await database.close()
        print(f"created dashboard administrator {admin.email} ({admin.id}); sign in at {settings.public_site_url}/_/")
        return 0

    return asyncio.run(create())


def setup_link(url: str, settings: Settings) -> str | None:
    """In development, while no administrator exists: a new one-time set-up link (else None)."""
    if settings.environment != "development":
        return None

    async def issue() -> str | None:
        conn = await asyncpg.connect(url)
        try:
            return await issue_setup_token(conn)
        finally:
            await conn.close()

    token = asyncio.run(issue())
    return f"{settings.public_site_url}/_/setup/{token}" if token else None


def add_parser(commands: Any, data_dir_option: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "admin", help="manage the dashboard's administrators (/_/)",
        description="Dashboard administrators are accounts of their own, not app users.",
    )
    sub = parser.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a dashboard administrator",
                            description="Create an administrator; the password must pass the app's password policy. "
                            "Outside development they set up TOTP at their first sign-in.")
    create.add_argument("email")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input (otherwise it is asked for twice)")
    data_dir_option(create)
    return parser  # type: ignore[no-any-return]
