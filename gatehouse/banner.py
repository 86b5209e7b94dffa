"""What ``gatehouse serve`` prints before it serves: one aligned line for each thing a person
starting it needs (where the app, the API, the dashboard and the mail are, the keys and where
they are kept, the data folder, the database and the storage), true for every configuration.

Nothing secret is printed but the secret key itself (as ``gatehouse keys`` does): a database
URL loses its password (``without_password``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from gatehouse import __version__
from gatehouse.core.config import Settings
from gatehouse.core.db import DatabaseServer
from gatehouse.core.embedded import server_version
from gatehouse.core.keys import KeySet

LABEL_WIDTH = 17
#: The key settings ``load_keys`` reads from ``keys.json`` when they are not given (the legacy
#: JWTs are derived from the signing key, so they never decide where the keys are kept).
_STORED_KEYS = ("jwt_private_key", "publishable_key", "secret_key", "authenticator_password")
#: libpq connection parameters that carry a password inside a URL's query.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})

Line = tuple[str, str]


def without_password(url: str) -> str:
    """``url`` with any password removed: the one in the user information (``user:secret@``) and
    libpq's ``password`` and ``sslpassword`` query parameters (their names percent-decoded as libpq
    decodes them). The fragment goes too."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{hostport}" if user else hostport
    kept = [item for item in parts.query.split("&")
            if item and unquote(item.partition("=")[0]).strip().lower() not in _SECRET_PARAMETERS]
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(kept), ""))


def development_warning(settings: Settings) -> str:
    """For development mode asked for where others can reach it (the inbox is open), else ""."""
    if settings.environment != "development":
        return ""
    if settings.model_copy(update={"env": None}).environment == "development":
        return ""  # loopback and a plain-http loopback site URL: only this machine reaches it
    return ("development mode: /_inbox (sign-in links) and /metrics are open to anyone who reaches this server; "
            "set GATEHOUSE_ENV=production")


def api_url_warning(settings: Settings) -> str:
    """Outside development the API's public URL must be given: tokens and admin links name it."""
    if settings.environment == "development" or settings.api_external_url:
        return ""
    return (f"GATEHOUSE_API_EXTERNAL_URL is unset: access tokens name {settings.jwt_issuer} as their issuer and "
            "admin links point there; set it to the API's public URL")


def _mail(settings: Settings) -> Line:
    smtp = f"SMTP {settings.smtp_host}:{settings.smtp_port}" if settings.smtp_host else ""
    if settings.environment == "development":
        sent = f"also sent through {smtp}" if smtp else "nothing is sent: no SMTP configured"
        return "Mail inbox", f"{settings.public_site_url}/_inbox ({sent})"
    return "Mail", smtp or "outbox only (no SMTP configured: set GATEHOUSE_SMTP_HOST to send it)"


def _keys_home(settings: Settings) -> str:
    given = [name for name in _STORED_KEYS if getattr(settings, name) is not None]
    if len(given) == len(_STORED_KEYS):
        return "GATEHOUSE_* settings (environment, .env or secrets folder)"
    stored = settings.data_dir.expanduser().resolve() / "keys.json"
    if not given:
        return str(stored)
    return f"{stored}; " + ", ".join(f"GATEHOUSE_{name.upper()}" for name in given) + " from settings"


def _database(server: DatabaseServer, data_dir: Path) -> str:
    if server.embedded is None:
        return f"external PostgreSQL at {without_password(server.url)}"
    return f"embedded PostgreSQL {server_version()} on 127.0.0.1:{server.embedded.port} (in {data_dir / 'postgres'})"


def _storage(settings: Settings, data_dir: Path) -> str:
    if settings.storage_backend == "s3":
        where = settings.s3_endpoint_url or f"AWS {settings.s3_region}"
        prefix = f", keys under {settings.s3_prefix}" if settings.s3_prefix else ""
        return f"S3 bucket {settings.s3_bucket} at {where}{prefix}"
    folder = settings.storage_dir.expanduser().resolve() if settings.storage_dir else data_dir / "storage"
    return f"local folder {folder}"


def lines(settings: Settings, keys: KeySet, server: DatabaseServer, *,
          setup_link: str | None = None, providers: Sequence[str] = (), callback: str = "") -> list[Line]:
    """The banner's (label, value) lines, in the order people look for them."""
    data_dir = settings.data_dir.expanduser().resolve()
    site = settings.public_site_url
    result: list[Line] = [("Mode", settings.environment_reason)]
    if warning := development_warning(settings):
        result.append(("WARNING", warning))
    result += [("App", f"{site}/login"), ("API URL", settings.public_api_url)]
    if warning := api_url_warning(settings):
        result.append(("WARNING", warning))
    result.append(("Dashboard", f"{site}/_/"))
    if setup_link:
        result += [("Set-up link", setup_link),
                   ("", "(once, within an hour: creates the first dashboard administrator)")]
    result.append(_mail(settings))
    if providers:
        result.append(("Sign-in with", f"{', '.join(providers)} (callback {callback})"))
    result += [
        ("Publishable key", keys.publishable_key),
        ("Secret key", f"{keys.secret_key} (keep it on servers)"),
        ("Keys kept in", f"{_keys_home(settings)} (`gatehouse keys` prints all keys)"),
        ("Data folder", str(data_dir)),
        ("Database", _database(server, data_dir)),
    ]
    if settings.database_direct_url:
        result.append(("", f"through a pooler; migrations and LISTEN at {without_password(settings.database_direct_url)}"))
    if settings.database_read_url:
        result.append(("Read replica", without_password(settings.database_read_url)))
    result.append(("Storage", _storage(settings, data_dir)))
    return result


def render(settings: Settings, keys: KeySet, server: DatabaseServer, *, applied: Sequence[str] = (),
           setup_link: str | None = None, providers: Sequence[str] = (), callback: str = "") -> str:
    """The whole banner: a title line, then one aligned line per item."""
    done = f"{len(applied)} migrations applied" if applied else "database up to date"
    body = lines(settings, keys, server, setup_link=setup_link, providers=providers,
                 callback=callback)
    return "\n".join([f"\nGatehouse {__version__} ({done})",
                      *(f"  {label:<{LABEL_WIDTH}}{value}".rstrip() for label, value in body)]) + "\n"
