"""The gatehouse command, run as a user would: a real process, a real data folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx

from gatehouse import __version__
from gatehouse.core.embedded import free_port
from gatehouse.core.keys import KeySet
from tests.smtp import SMTPServer, smtp_env
from tests.support import gatehouse_command, start_server


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | (env or {})
    return subprocess.run(
        gatehouse_command(*args), capture_output=True, text=True, env=clean, cwd=cwd, timeout=120, check=False
    )


def test_version() -> None:
    assert run("--version").stdout.strip() == f"gatehouse {__version__}"


def test_help_explains_each_command() -> None:
    out = run("--help").stdout
    for command in ("serve", "migrate", "keys", "psql"):
        assert command in out
    assert "GATEHOUSE_DATABASE_URL" in out
    assert "--workers" in run("serve", "--help").stdout


def test_keys_prints_one_per_line_and_keeps_them(tmp_path: Path) -> None:
    first = run("keys", "--data-dir", str(tmp_path)).stdout.splitlines()
    assert len(first) == 4
    assert first[0].startswith("sb_publishable_") and first[1].startswith("sb_secret_")
    assert first[2].startswith("eyJ") and first[3].startswith("eyJ")
    assert run("keys", "--data-dir", str(tmp_path)).stdout.splitlines() == first
    env_lines = run("keys", "--env", "--data-dir", str(tmp_path)).stdout.splitlines()
    assert env_lines[0] == f"GATEHOUSE_PUBLISHABLE_KEY={first[0]}"


def test_data_dir_from_the_environment(tmp_path: Path) -> None:
    run("keys", env={"GATEHOUSE_DATA_DIR": str(tmp_path / "d")})
    assert (tmp_path / "d" / "keys.json").exists()


def test_bad_setting_is_one_clean_line(tmp_path: Path) -> None:
    result = run("keys", "--data-dir", str(tmp_path), env={"GATEHOUSE_PORT": "eighty"})
    assert result.returncode == 1
    assert "GATEHOUSE_PORT" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_taken_http_port_cleanly(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = run("serve", "--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "postgres").exists()  # gave up before starting anything


def test_serve_refuses_a_taken_database_port_cleanly(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = run("serve", "--port", str(free_port()), "--data-dir", str(tmp_path),
                     env={"GATEHOUSE_EMBEDDED_DB_PORT": str(port)})
    assert result.returncode == 1
    assert "GATEHOUSE_EMBEDDED_DB_PORT" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_an_unreachable_database_cleanly(tmp_path: Path) -> None:
    url = f"postgresql://nobody:nothing@127.0.0.1:{free_port()}/nowhere"
    result = run("serve", "--port", str(free_port()), "--data-dir", str(tmp_path), env={"GATEHOUSE_DATABASE_URL": url})
    assert result.returncode == 1
    assert "cannot use the database at 127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def _postgres_running(data_dir: Path) -> bool:
    return (data_dir / "postgres" / "postmaster.pid").exists()


def test_serve_embedded_lifecycle(tmp_path: Path, keys: KeySet) -> None:
    """Start on an empty folder, serve, stop on SIGTERM (PostgreSQL too), start again on the same data.

    With the default settings, while port 54322 (the Supabase CLI's local database) is taken: the
    embedded server picks a free port, remembers it, and ``gatehouse psql`` finds it.
    """
    data = tmp_path / "data"
    env: dict[str, str] = {}
    with socket.socket() as supabase_db:
        supabase_db.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            supabase_db.bind(("127.0.0.1", 54322))
            supabase_db.listen()
        except OSError:
            pass  # something else holds it already: taken either way
        server = start_server(data, keys, database_url=None, env=env)
    assert _postgres_running(data)
    port = int((data / "postgres.port").read_text())
    assert port != 54322
    assert "Publishable key  sb_publishable_" in server.log() and "Secret key       sb_secret_" in server.log()
    psql = run("psql", "--data-dir", str(data), "--", "-XtAc", "CREATE TABLE public.kept (v text); INSERT INTO public.kept VALUES ('yes')")
    assert psql.returncode == 0, psql.stderr
    assert server.stop(signal.SIGTERM) == 0
    assert not _postgres_running(data)

    again = start_server(data, keys, database_url=None, env=env)
    try:
        jwks = httpx.get(f"{again.url}/auth/v1/.well-known/jwks.json").json()
        assert jwks["keys"][0]["kid"] == server_kid(data)
        out = run("psql", "--data-dir", str(data), "--", "-XtAc", "SELECT v FROM public.kept")
        assert out.stdout.strip() == "yes"
        assert int((data / "postgres.port").read_text()) == port  # the remembered port, while it is free
    finally:
        assert again.stop(signal.SIGINT) == 0
    assert not _postgres_running(data)


def server_kid(data: Path) -> str:
    from gatehouse.core.config import load_settings
    from gatehouse.core.keys import load_keys

    return load_keys(load_settings(data_dir=data)).kid


def test_migrate_applies_a_user_folder_once(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_todos.sql").write_text("CREATE TABLE public.todos (id serial PRIMARY KEY, task text);")
    env = {"GATEHOUSE_EMBEDDED_DB_PORT": "0"}
    first = run("migrate", "--data-dir", str(tmp_path / "data"), "--dir", str(migrations), env=env)
    assert first.returncode == 0, first.stderr
    assert "applied builtin/0001_roles.sql" in first.stdout and "applied user/0001_todos.sql" in first.stdout
    second = run("migrate", "--data-dir", str(tmp_path / "data"), "--dir", str(migrations), env=env)
    assert second.stdout.strip() == "database is up to date"
    assert not _postgres_running(tmp_path / "data")  # migrate started it, so it stopped it


def test_users_commands(database_url: str, keys_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copy(keys_dir / "keys.json", tmp_path / "keys.json")
    env = {"GATEHOUSE_DATABASE_URL": database_url, "GATEHOUSE_DATA_DIR": str(tmp_path)}
    created = run("users", "create", "cli@example.com", "--password", "a cli passphrase", "--confirm", env=env)
    assert created.returncode == 0, created.stderr
    user_id = created.stdout.strip()
    assert len(user_id) == 36
    piped = subprocess.run(
        gatehouse_command("users", "create", "piped@example.com", "--password-stdin"),
        input="another passphrase\n", capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | env,
    )
    assert piped.returncode == 0, piped.stderr
    listed = run("users", "list", env=env).stdout
    assert "cli@example.com" in listed and "piped@example.com" in listed
    assert [line.split()[2] for line in listed.splitlines() if "piped@" in line] == ["no"]
    assert run("users", "confirm", "piped@example.com", env=env).returncode == 0
    assert [line.split()[2] for line in run("users", "list", env=env).stdout.splitlines() if "piped@" in line] == ["yes"]
    assert run("users", "delete", user_id, env=env).returncode == 0
    assert "cli@example.com" not in run("users", "list", env=env).stdout
    missing = run("users", "delete", "nobody@example.com", env=env)
    assert missing.returncode == 1 and "no user with the email nobody@example.com" in missing.stderr
    duplicate = run("users", "create", "piped@example.com", "--password", "x passphrase long", env=env)
    assert duplicate.returncode == 1 and "already been registered" in duplicate.stderr


def test_mail_test_reports_the_servers_answer(tmp_path: Path, smtp: SMTPServer) -> None:
    result = run("mail", "test", "me@example.com", env=smtp_env(smtp.port))
    assert result.returncode == 0, result.stderr
    assert "the SMTP server answered: 250" in result.stdout
    assert smtp.received[0].recipients == ["me@example.com"]
    unconfigured = run("mail", "test", "me@example.com")
    assert unconfigured.returncode == 1 and "GATEHOUSE_SMTP_HOST" in unconfigured.stderr
    down = run("mail", "test", "me@example.com", env=smtp_env(free_port()))
    assert down.returncode == 1 and "Traceback" not in down.stderr


def test_production_without_an_api_url_is_warned_about() -> None:
    from gatehouse.banner import api_url_warning
    from gatehouse.core.config import load_settings

    behind_proxy = load_settings(site_url="https://app.example.com")
    assert "GATEHOUSE_API_EXTERNAL_URL is unset" in api_url_warning(behind_proxy)
    assert api_url_warning(load_settings(site_url="https://app.example.com",
                                         api_external_url="https://api.example.com")) == ""
    assert api_url_warning(load_settings()) == ""  # development on loopback
