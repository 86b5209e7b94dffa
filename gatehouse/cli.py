"""The ``gatehouse`` command: serve, init, migrate (new), keys, psql, users, admin, backup, restore, mail test,
gen types."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from gatehouse import __version__, banner
from gatehouse.core import logs
from gatehouse.core.config import ConfigError, Settings, load_settings
from gatehouse.core.db import database_server, prepare
from gatehouse.core.embedded import EmbeddedPostgresError, bin_dir, port_is_free
from gatehouse.core.errors import GatehouseError
from gatehouse.core.keys import KeySet, load_keys
from gatehouse.core.migrate import MigrationError
from gatehouse.ops.backup import BackupError
from gatehouse.ops.importer import ImportFailed
from gatehouse.project import ProjectError

DESCRIPTION = """\
Gatehouse: self-hosted user management (auth, data API, storage) that the
Supabase clients can talk to.

With no GATEHOUSE_DATABASE_URL, Gatehouse runs its own PostgreSQL in the data
folder (./.gatehouse by default), so `gatehouse serve` is all you need.
Settings come from GATEHOUSE_* environment variables and a .env file; the
README lists them all.
"""


class CLIError(Exception):
    """Printed as one line, without a traceback, and exits with status 1."""


def _graceful_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that `finally` blocks (stopping PostgreSQL) run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": getattr(args, "data_dir", None),
        "workers": getattr(args, "workers", None),
        "migrations_dir": getattr(args, "dir", None),
    }
    settings = load_settings(**overrides)
    logs.configure(settings.log_level, settings.log_format)
    return settings


def _prepare(url: str, keys: KeySet, settings: Settings) -> list[str]:
    try:
        return asyncio.run(prepare(url, keys, settings))
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = urlsplit(url)
        raise CLIError(f"cannot use the database at {where.hostname}:{where.port or 5432}{where.path}: {exc}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gatehouse.auth.flows.base import callback_url
    from gatehouse.auth.oauth.providers import Providers

    settings = _settings(args)
    _graceful_sigterm()
    if not port_is_free(settings.port, settings.host):
        raise CLIError(
            f"port {settings.port} on {settings.host} is already in use; "
            "stop what uses it or choose another with --port (or GATEHOUSE_PORT)"
        )
    keys = load_keys(settings)
    # Every worker builds the providers again; a mistake in their settings stops the start here, in one line.
    providers = Providers(settings.oauth_providers, callback_url(settings))
    with database_server(settings) as server:
        applied = _prepare(server.url, keys, settings)
        from gatehouse.dashboard.cli import setup_link

        setup = setup_link(server.url, settings)
        # Worker processes build the app from the environment: hand them what we resolved.
        os.environ["GATEHOUSE_DATABASE_URL"] = server.url
        os.environ["GATEHOUSE_DATA_DIR"] = str(settings.data_dir.expanduser().resolve())
        os.environ["GATEHOUSE_HOST"] = settings.host
        os.environ["GATEHOUSE_PORT"] = str(settings.port)
        if settings.migrations_dir:
            os.environ["GATEHOUSE_MIGRATIONS_DIR"] = str(settings.migrations_dir.resolve())
        if settings.metrics_enabled and settings.worker_count > 1:
            # every worker writes its counts here; a scrape of any worker sums them all
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gatehouse-metrics-")
        # Every worker writes logs as this process does, whatever its own standard error is.
        os.environ["GATEHOUSE_LOG_FORMAT"] = logs.resolve(settings.log_format)
        print(banner.render(settings, keys, server, applied=applied, setup_link=setup, providers=providers.names,
                            callback=callback_url(settings)), flush=True)
        uvicorn.run(
            "gatehouse.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.worker_count,
            log_config=None,
            access_log=False,
            server_header=False,
            # X-Forwarded-For/-Proto only from the proxies named in GATEHOUSE_TRUSTED_PROXIES.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or "",
            timeout_graceful_shutdown=10,
            # Realtime frames are small and frequent: compressing each cost ~15% more CPU per message
            # (bench/realtime.py), as Phoenix, which upstream Realtime runs on, does not by default.
            ws_per_message_deflate=False,
            # Longer than clients' own idle limits (httpx: 5 s): otherwise a client may reuse a
            # connection the server is closing at that very moment, and the request fails.
            timeout_keep_alive=75,
        )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _graceful_sigterm()
    keys = load_keys(settings)
    with database_server(settings) as server:
        applied = _prepare(server.url, keys, settings)
    if applied:
        for label in applied:
            print(f"applied {label}")
    else:
        print("database is up to date")
    return 0


def cmd_migrate_new(args: argparse.Namespace) -> int:
    from gatehouse.project import new_migration

    folder = _settings(args).migrations_dir or Path("migrations")
    print(f"created {new_migration(folder, args.name)}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from gatehouse.project import EXAMPLE_MIGRATION, init

    folder: Path = args.folder
    written = init(folder, force=args.force)
    names = [str(item.path.relative_to(folder)) for item in written]
    width = max(len(name) for name in names)
    print(f"Made a Gatehouse project in {folder.resolve()}:")
    for name, item in zip(names, written, strict=True):
        print(f"  {name:<{width}}  {item.about}")
    if EXAMPLE_MIGRATION not in names:
        print(f"  (no {EXAMPLE_MIGRATION}: migrations/ already holds migrations)")
    steps = [("cd " + str(folder), "")] if folder.resolve() != Path.cwd().resolve() else []
    steps += [
        ("cp .env.example .env", "this machine's settings: GATEHOUSE_MIGRATIONS_DIR=migrations"),
        ("gatehouse serve", "applies migrations/ and prints where everything is"),
        ("gatehouse migrate new NAME", "the next migration file, e.g. add_due_dates"),
    ]
    print("Next:")
    for command, why in steps:
        print(f"  {command:<28}{why}".rstrip())
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    settings = _settings(args)
    keys = load_keys(settings)
    values = [
        ("GATEHOUSE_PUBLISHABLE_KEY", keys.publishable_key),
        ("GATEHOUSE_SECRET_KEY", keys.secret_key),
        ("GATEHOUSE_ANON_KEY", keys.anon_key),
        ("GATEHOUSE_SERVICE_ROLE_KEY", keys.service_role_key),
    ]
    for name, value in values:
        print(f"{name}={value}" if args.env else value)
    return 0


def cmd_psql(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _graceful_sigterm()
    with database_server(settings) as server:
        parts = urlsplit(server.url)
        env = {**os.environ}
        if parts.password:
            env["PGPASSWORD"] = unquote(parts.password)
        # The URL as a connection string (it may name a socket folder), without the password:
        # that goes in the environment, out of sight of `ps`.
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.username or "postgres"
        target = urlunsplit((parts.scheme, f"{user}@{netloc}", parts.path or "/postgres", parts.query, ""))
        command = [str(bin_dir() / "psql"), "-d", target, *args.psql_args]
        # Ctrl-C belongs to psql (it cancels the running query), not to us.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return subprocess.call(command, env=env)
        finally:
            signal.signal(signal.SIGINT, previous)


def cmd_backup(args: argparse.Namespace) -> int:
    from gatehouse.ops.backup import backup

    settings = _settings(args)
    _graceful_sigterm()
    with database_server(settings) as server:
        summary = backup(settings, server.url, args.file, include_files=not args.database_only)
    print(summary.describe())
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from gatehouse.ops.backup import restore

    settings = _settings(args)
    _graceful_sigterm()
    print(restore(settings, args.file).describe())
    return 0


def _on_database(args: argparse.Namespace, run: Callable[[argparse.Namespace, str, KeySet, Settings], int]) -> int:
    """Run a command that works on the database: the embedded one started (and stopped) as needed,
    migrations applied first."""
    settings = _settings(args)
    _graceful_sigterm()
    keys = load_keys(settings)
    with database_server(settings) as server:
        _prepare(server.url, keys, settings)
        return run(args, server.url, keys, settings)


def cmd_users(args: argparse.Namespace) -> int:
    from gatehouse.auth import cli as users_cli

    return _on_database(args, users_cli.run)


def cmd_admin(args: argparse.Namespace) -> int:
    from gatehouse.dashboard import cli as admin_cli

    return _on_database(args, admin_cli.run)


def cmd_s3_keys(args: argparse.Namespace) -> int:
    from gatehouse.storage.s3 import cli as s3_cli

    return _on_database(args, s3_cli.run)


def cmd_gen(args: argparse.Namespace) -> int:
    from gatehouse.gen import cli as gen_cli

    return _on_database(args, gen_cli.run)


def cmd_import(args: argparse.Namespace) -> int:
    from gatehouse.ops.importer import cli as import_cli

    return _on_database(args, import_cli.run)


def cmd_mail(args: argparse.Namespace) -> int:
    from gatehouse.mail.service import send_test_message

    settings = _settings(args)
    answer = asyncio.run(send_test_message(settings, args.address))
    print(f"sent; the SMTP server answered: {answer}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatehouse", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"gatehouse {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def data_dir_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--data-dir", type=Path, metavar="DIR",
            help="data folder for the embedded database, keys and files (default ./.gatehouse, or GATEHOUSE_DATA_DIR)",
        )

    serve = commands.add_parser(
        "serve", help="start the HTTP server (and the embedded PostgreSQL when no database URL is set)",
        description="Apply migrations, then serve the auth (/auth/v1), data (/rest/v1) and storage (/storage/v1) "
        "APIs, the web pages and the health checks. Stops cleanly on Ctrl-C or SIGTERM.",
    )
    serve.add_argument("--host", metavar="H", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, metavar="P", help="port to listen on (default 8000)")
    data_dir_option(serve)
    serve.add_argument("--workers", type=int, metavar="N", help="worker processes (default: the number of CPU cores)")
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser(
        "migrate", help="apply pending database migrations and exit",
        description="Apply Gatehouse's built-in migrations, then your own .sql files (in name order) from --dir.",
    )
    data_dir_option(migrate)
    migrate.add_argument("--dir", type=Path, metavar="DIR", help="folder of your own .sql migrations (or GATEHOUSE_MIGRATIONS_DIR)")
    migrate.set_defaults(func=cmd_migrate)
    migrate_actions = migrate.add_subparsers(dest="migrate_action", metavar="ACTION")
    migrate_new = migrate_actions.add_parser(
        "new", help="create the next numbered migration file",
        description="Create NNNN_NAME.sql in your migrations folder: the next number after the highest there, "
        "zero-padded to 4, and NAME in lower case with anything but letters and digits as _.",
    )
    migrate_new.add_argument("name", metavar="NAME", help="what the migration does, e.g. add_todos")
    migrate_new.add_argument("--dir", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                             help="the migrations folder (default GATEHOUSE_MIGRATIONS_DIR, else ./migrations)")
    migrate_new.set_defaults(func=cmd_migrate_new)

    init = commands.add_parser(
        "init", help="make a project folder to commit: migrations/, .env.example, .gitignore",
        description="Write migrations/0001_example.sql (a table with row-level security, commented), "
        ".env.example (the settings a deployment sets) and .gitignore (the data folder and secrets stay out) "
        "into DIR. Existing files are never overwritten without --force.",
    )
    init.add_argument("folder", type=Path, nargs="?", default=Path("."), metavar="DIR",
                      help="the project folder (default: the current one; made if missing)")
    init.add_argument("--force", action="store_true", help="overwrite those files where they exist")
    init.set_defaults(func=cmd_init)

    keys = commands.add_parser(
        "keys", help="print the API keys (creating them on first use)",
        description="Print the publishable key, the secret key, and the legacy anon and service_role JWTs, one per line.",
    )
    data_dir_option(keys)
    keys.add_argument("--env", action="store_true", help="print NAME=value lines, ready for a .env file")
    keys.set_defaults(func=cmd_keys)

    psql = commands.add_parser(
        "psql", help="open a psql shell on Gatehouse's database",
        description="Run the embedded PostgreSQL's own psql against the database (arguments after -- go to psql).",
    )
    data_dir_option(psql)
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    psql.set_defaults(func=cmd_psql)

    backup = commands.add_parser(
        "backup", help="write the database, the keys and the stored files to one archive",
        description="Write one consistent archive (FILE.tar, or FILE.tar.gz to compress) of the database "
        "(pg_dump), keys.json and the stored files; safe while Gatehouse serves. The archive holds secrets "
        "(the signing key, password hashes): keep it as safe as the data folder.",
    )
    backup.add_argument("file", type=Path, metavar="FILE", help="archive to write (replaced if it exists)")
    data_dir_option(backup)
    backup.add_argument(
        "--database-only", action="store_true",
        help="leave the stored files out (needed with the S3 backend: back the bucket up with S3 tools)",
    )
    backup.set_defaults(func=cmd_backup)

    restore = commands.add_parser(
        "restore", help="bring a backup back into a new data folder",
        description="Restore an archive made by `gatehouse backup` into a fresh data folder (and, with "
        "GATEHOUSE_DATABASE_URL, an empty database); then start it with `gatehouse serve`.",
    )
    restore.add_argument("file", type=Path, metavar="FILE", help="archive made by gatehouse backup")
    data_dir_option(restore)
    restore.set_defaults(func=cmd_restore)

    from gatehouse.auth import cli as users_cli

    users_cli.add_parser(commands, data_dir_option).set_defaults(func=cmd_users)
    from gatehouse.dashboard import cli as admin_cli

    admin_cli.add_parser(commands, data_dir_option).set_defaults(func=cmd_admin)
    from gatehouse.storage.s3 import cli as s3_cli

    s3_cli.add_parser(commands, data_dir_option).set_defaults(func=cmd_s3_keys)
    from gatehouse.gen import cli as gen_cli

    gen_cli.add_parser(commands, data_dir_option).set_defaults(func=cmd_gen)
    from gatehouse.ops.importer import cli as import_cli

    import_cli.add_parser(commands, data_dir_option).set_defaults(func=cmd_import)

    mail = commands.add_parser("mail", help="check the email set-up", description="Email tools.")
    mail_commands = mail.add_subparsers(dest="mail_command", metavar="ACTION", required=True)
    mail_test = mail_commands.add_parser(
        "test", help="send a test message over SMTP now and print the server's answer",
        description="Send a test email through GATEHOUSE_SMTP_* (not through the outbox) and report the answer.",
    )
    mail_test.add_argument("address", help="where to send the test message")
    mail_test.set_defaults(func=cmd_mail)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "psql_args", None) and args.psql_args[0] == "--":
        args.psql_args = args.psql_args[1:]
    try:
        return int(args.func(args))
    except (ConfigError, EmbeddedPostgresError, MigrationError, CLIError, BackupError, ProjectError,
            ImportFailed) as exc:
        print(f"gatehouse: error: {exc}", file=sys.stderr)
        return 1
    except GatehouseError as exc:
        print(f"gatehouse: error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno == 98:  # EADDRINUSE from the HTTP server's bind
            print(f"gatehouse: error: the HTTP port is already in use ({exc.strerror})", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
