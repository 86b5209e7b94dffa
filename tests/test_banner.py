"""What ``gatehouse serve`` prints first: one true line per thing a person needs, and never a
database password. Through the real command (its output is the server log), then the cases a
test server cannot reach (S3, SMTP, keys from the environment) on ``banner.lines``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from gatehouse import __version__
from gatehouse.banner import lines, without_password
from gatehouse.core.config import load_settings
from gatehouse.core.db import DatabaseServer
from gatehouse.core.embedded import server_version
from gatehouse.core.keys import KeySet
from tests.support import RunningServer, start_server

ORDER = ["Mode", "App", "API URL", "Dashboard", "Set-up link", "", "Mail inbox", "Publishable key", "Secret key",
         "Keys kept in", "Data folder", "Database", "Storage"]


def banner(server: RunningServer) -> dict[str, str]:
    """The banner's lines as label -> value (a label seen twice fails), in printed order."""
    log = server.log()
    title = re.search(rf"^Gatehouse {re.escape(__version__)} \((\d+ migrations applied|database up to date)\)$",
                      log, re.MULTILINE)
    assert title, log
    found: dict[str, str] = {}
    for line in log[title.end() + 1:].splitlines():
        if not line.startswith("  "):
            break
        label, value = line[2:19].strip(), line[19:]
        assert label not in found, f"{label!r} printed twice:\n{log}"
        found[label] = value
    return found


def test_development_on_the_embedded_database(tmp_path: Path, keys: KeySet, keys_dir: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, keys, database_url=None, keys_file=keys_dir / "keys.json")
    try:
        shown = banner(server)
        url = server.url
        assert list(shown) == ORDER
        assert shown["Mode"] == f"development: GATEHOUSE_ENV is unset and the site URL {url} is on loopback"
        assert shown["App"] == f"{url}/login"
        assert shown["API URL"] == url
        assert shown["Dashboard"] == f"{url}/_/"
        assert re.fullmatch(rf"{url}/_/setup/[\w-]+", shown["Set-up link"])
        assert shown["Mail inbox"] == f"{url}/_inbox (nothing is sent: no SMTP configured)"
        assert shown["Publishable key"] == keys.publishable_key
        assert shown["Secret key"] == f"{keys.secret_key} (keep it on servers)"
        folder = data.resolve()
        assert shown["Keys kept in"] == f"{folder / 'keys.json'} (`gatehouse keys` prints all keys)"
        assert shown["Data folder"] == str(folder)
        port = int((data / "postgres.port").read_text())
        assert shown["Database"] == f"embedded PostgreSQL {server_version()} on 127.0.0.1:{port} (in {folder / 'postgres'})"
        assert shown["Storage"] == f"local folder {folder / 'storage'}"
        # what it names is there
        assert httpx.get(shown["App"]).status_code == 200
        assert httpx.get(shown["Mail inbox"].split()[0]).status_code == 200
        assert httpx.get(shown["Dashboard"], follow_redirects=True).status_code == 200
        assert httpx.get(f"{shown['API URL']}/auth/v1/health", headers={"apikey": keys.publishable_key}).status_code == 200
    finally:
        assert server.stop() == 0


def test_an_external_database_is_shown_without_its_password(
    server_factory: Callable[..., RunningServer], database_url: str, keys: KeySet
) -> None:
    password = urlsplit(database_url).password
    assert password  # the test's database URL carries one: the point of the test
    server = server_factory(env={"GATEHOUSE_PUBLISHABLE_KEY": keys.publishable_key,
                                 "GATEHOUSE_SECRET_KEY": keys.secret_key})
    shown = banner(server)
    assert shown["Database"] == f"external PostgreSQL at {without_password(database_url)}"
    assert shown["Database"].startswith(f"external PostgreSQL at postgresql://{urlsplit(database_url).username}@/")
    assert password not in server.log() and unquote(password) not in server.log()
    assert shown["Keys kept in"] == (f"{server.data_dir.resolve() / 'keys.json'}; GATEHOUSE_PUBLISHABLE_KEY, "
                                     "GATEHOUSE_SECRET_KEY from settings (`gatehouse keys` prints all keys)")
    assert shown["Mail inbox"] == f"{server.url}/_inbox (nothing is sent: no SMTP configured)"


def test_production_has_no_inbox_and_says_where_mail_goes(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(env={"GATEHOUSE_SITE_URL": "https://app.example.com"})
    shown = banner(server)
    assert shown["Mode"] == ("production: GATEHOUSE_ENV is unset and the site URL https://app.example.com is https, "
                             "not plain http")
    assert shown["App"] == "https://app.example.com/login"
    assert shown["API URL"] == server.url  # not configured apart: the server's own address, and a warning
    assert shown["WARNING"].startswith("GATEHOUSE_API_EXTERNAL_URL is unset")
    assert shown["Mail"] == "outbox only (no SMTP configured: set GATEHOUSE_SMTP_HOST to send it)"
    assert "Mail inbox" not in shown and "Set-up link" not in shown
    assert not any("/_inbox" in value for value in shown.values())


# -- the configurations a test server does not start with -------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:s3cr%40t@db.example.com:5432/app", "postgresql://app@db.example.com:5432/app"),
    ("postgresql://app:pa:ss@db/app", "postgresql://app@db/app"),
    ("postgresql://:only@db/app", "postgresql://db/app"),
    ("postgresql://app@db/app?sslmode=require", "postgresql://app@db/app?sslmode=require"),
    ("postgresql://db/app?user=app&password=s3cret&sslmode=verify-full",
     "postgresql://db/app?user=app&sslmode=verify-full"),
    ("postgresql://db/app?%70assword=s3cret&PASSWORD=s3cret&sslpassword=s3cret", "postgresql://db/app"),
    ("postgresql://app:s3cret@/app?host=/run/pg&port=5433", "postgresql://app@/app?host=/run/pg&port=5433"),
])
def test_without_password(url: str, shown: str) -> None:
    assert without_password(url) == shown
    assert "s3cr" not in shown and "only" not in shown and "ss@" not in shown


def _shown(keys: KeySet, database_url: str | None = "postgresql://u:pw@db/app", **settings: object) -> dict[str, str]:
    server = DatabaseServer(database_url or "", None)
    return dict(lines(load_settings(**settings), keys, server))


def test_mail_storage_and_keys_in_every_configuration(keys: KeySet, tmp_path: Path) -> None:
    smtp = _shown(keys, site_url="https://app.example.com", smtp_host="smtp.example.com", smtp_port=465)
    assert smtp["Mail"] == "SMTP smtp.example.com:465"
    local_smtp = _shown(keys, smtp_host="127.0.0.1", smtp_port=2525)
    assert local_smtp["Mail inbox"] == "http://127.0.0.1:8000/_inbox (also sent through SMTP 127.0.0.1:2525)"
    s3 = _shown(keys, storage_backend="s3", s3_bucket="files", s3_endpoint_url="https://s3.example.com",
                s3_prefix="app/")
    assert s3["Storage"] == "S3 bucket files at https://s3.example.com, keys under app/"
    assert _shown(keys, storage_backend="s3", s3_bucket="files", s3_region="eu-west-1")["Storage"] == \
        "S3 bucket files at AWS eu-west-1"
    assert _shown(keys, storage_dir=tmp_path / "files")["Storage"] == f"local folder {tmp_path / 'files'}"
    pem = keys.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    given = _shown(keys, jwt_private_key=pem, publishable_key=keys.publishable_key, secret_key=keys.secret_key,
                   authenticator_password=keys.authenticator_password)
    assert given["Keys kept in"] == ("GATEHOUSE_* settings (environment, .env or secrets folder) "
                                     "(`gatehouse keys` prints all keys)")
    separate = _shown(keys, site_url="https://app.example.com", api_external_url="https://api.example.com")
    assert (separate["App"], separate["API URL"], separate["Dashboard"]) == (
        "https://app.example.com/login", "https://api.example.com", "https://app.example.com/_/")
    assert "WARNING" not in separate
    assert _shown(keys)["Database"] == "external PostgreSQL at postgresql://u@db/app"



def test_a_replica_and_a_pooler_are_named_without_their_passwords(keys: KeySet) -> None:
    shown = lines(load_settings(database_url="postgresql://u:pw@pooler:6432/app",
                                database_direct_url="postgresql://u:direct-pw@db:5432/app",
                                database_read_url="postgresql://u:replica-pw@replica:5432/app"),
                  keys, DatabaseServer("postgresql://u:pw@pooler:6432/app", None))
    text = "\n".join(f"{label} {value}" for label, value in shown)
    assert "Read replica postgresql://u@replica:5432/app" in text
    assert "through a pooler; migrations and LISTEN at postgresql://u@db:5432/app" in text
    assert "pw" not in text.replace("pooler", "")
