"""Settings come from GATEHOUSE_* variables and .env, and bad values are named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.core.config import OAUTH_FIELDS, ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("GATEHOUSE_PORT", "GATEHOUSE_HOST", "GATEHOUSE_SITE_URL", "GATEHOUSE_ENV", "GATEHOUSE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_local_and_safe() -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.data_dir == Path(".gatehouse")
    assert settings.database_url is None
    assert settings.environment == "development"
    assert settings.public_site_url == "http://127.0.0.1:8000"
    assert settings.jwt_issuer == "http://127.0.0.1:8000/auth/v1"
    assert settings.rate_limits_enabled and settings.argon2_memory_kib >= 19456


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_PORT", "9001")
    monkeypatch.setenv("GATEHOUSE_SITE_URL", "https://app.example.com/")
    assert load_settings().port == 9001
    assert load_settings().site_url == "https://app.example.com"
    # the issuer is the API's own URL, not the app's (as the upstream auth server derives it)
    assert load_settings().jwt_issuer == "http://127.0.0.1:9001/auth/v1"
    monkeypatch.setenv("GATEHOUSE_API_EXTERNAL_URL", "https://api.example.com/")
    assert load_settings().jwt_issuer == "https://api.example.com/auth/v1"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GATEHOUSE_PORT=9002\nGATEHOUSE_ENV=production\n")
    settings = load_settings()
    assert settings.port == 9002 and settings.environment == "production"


def test_cli_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_PORT", "9001")
    assert load_settings(port=9100).port == 9100
    assert load_settings(port=None).port == 9001  # an absent flag does not override


@pytest.mark.parametrize(("host", "environment"), [("127.0.0.1", "development"), ("::1", "development"),
                                                   ("localhost", "development"), ("0.0.0.0", "production")])
def test_environment_follows_the_bind_address(host: str, environment: str) -> None:
    assert load_settings(host=host).environment == environment


@pytest.mark.parametrize(
    ("overrides", "environment", "why"),
    [
        # GATEHOUSE_ENV, when set, decides
        ({"env": "development", "host": "0.0.0.0", "site_url": "https://app.example.com"}, "development",
         "GATEHOUSE_ENV is development"),
        ({"env": "production"}, "production", "GATEHOUSE_ENV is production"),
        # unset, no site URL: the derived http://HOST:PORT on a loopback bind stays development
        ({}, "development", "the site URL http://127.0.0.1:8000 is on loopback"),
        ({"host": "::1"}, "development", "the site URL http://[::1]:8000 is on loopback"),
        ({"host": "localhost"}, "development", "the site URL http://localhost:8000 is on loopback"),
        ({"host": "127.0.0.2"}, "development", "the site URL http://127.0.0.2:8000 is on loopback"),
        # unset, plain http site URL on a loopback host (a front-end dev server, say)
        ({"site_url": "http://localhost:3000"}, "development", "the site URL http://localhost:3000 is on loopback"),
        ({"site_url": "http://[::1]:3000"}, "development", "is on loopback"),
        # unset, behind a reverse proxy on 127.0.0.1: the site URL says production
        ({"site_url": "https://app.example.com"}, "production",
         "the site URL https://app.example.com is https, not plain http"),
        ({"site_url": "https://localhost:8443"}, "production", "is https, not plain http"),
        ({"site_url": "http://app.example.com"}, "production",
         "the site URL http://app.example.com is not on a loopback host"),
        ({"site_url": "http://192.168.1.5:8000"}, "production", "is not on a loopback host"),
        ({"site_url": "http://localhost.example.com"}, "production", "is not on a loopback host"),
        # unset, listening beyond loopback: production whatever the site URL says
        ({"host": "0.0.0.0"}, "production", "Gatehouse listens on 0.0.0.0, not on loopback"),
        ({"host": "::"}, "production", "Gatehouse listens on ::, not on loopback"),
        ({"host": "10.0.0.7", "site_url": "http://localhost:8000"}, "production", "listens on 10.0.0.7"),
    ],
)
def test_development_mode_must_be_asked_for_or_obvious(
    overrides: dict[str, str], environment: str, why: str
) -> None:
    settings = load_settings(**overrides)
    assert settings.environment == environment
    assert settings.environment_reason.startswith(f"{environment}: ")
    assert why in settings.environment_reason


def test_metrics_default_follows_the_environment() -> None:
    assert load_settings().metrics_enabled
    assert not load_settings(site_url="https://app.example.com").metrics_enabled
    assert load_settings(site_url="https://app.example.com", metrics=True).metrics_enabled


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GATEHOUSE_PORT", "eighty", "GATEHOUSE_PORT"),
        ("GATEHOUSE_PORT", "70000", "less than or equal to 65535"),
        ("GATEHOUSE_DATABASE_URL", "mysql://x", "must start with postgresql://"),
        ("GATEHOUSE_SITE_URL", "example.com", "must start with http:// or https://"),
        ("GATEHOUSE_ENV", "staging", "GATEHOUSE_ENV"),
        ("GATEHOUSE_RATE_LIMIT_TOKEN", "lots", "must look like N/S"),
        ("GATEHOUSE_ARGON2_MEMORY_KIB", "1024", "GATEHOUSE_ARGON2_MEMORY_KIB"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        settings.port = 1  # type: ignore[misc]
    assert isinstance(settings, Settings)


#: Settings read from a family of variables rather than one: the README documents each member.
FAMILIES = {"oauth_providers": [f"GATEHOUSE_OAUTH_<NAME>_{field}" for field in OAUTH_FIELDS]}


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    names = [variable for name in Settings.model_fields
             for variable in FAMILIES.get(name, [f"GATEHOUSE_{name.upper()}"])]
    missing = [name for name in names if f"| `{name}` |" not in readme]
    assert not missing, f"README.md lacks {missing}"


@pytest.mark.parametrize(
    ("value", "stored"),
    [("https://Files.Example-Usercontent.com/", "https://files.example-usercontent.com"),
     ("http://files.test:8001", "http://files.test:8001"), ("", None)],
)
def test_the_storage_origin_is_an_origin(value: str, stored: str | None) -> None:
    assert load_settings(storage_public_url=value).storage_public_url == stored


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"storage_public_url": "ftp://files.example.com"}, "GATEHOUSE_STORAGE_PUBLIC_URL: "),
        ({"storage_public_url": "https://example.com/files"}, "no path"),
        ({"storage_public_url": "https://files.example.com?x=1"}, "no path"),
        # another port of the app's host shares its cookies: refused
        ({"storage_public_url": "http://127.0.0.1:9000"}, "another host name than GATEHOUSE_SITE_URL"),
        ({"site_url": "https://app.example.com", "storage_public_url": "https://app.example.com:8443"},
         "another host name than GATEHOUSE_SITE_URL"),
        ({"site_url": "https://app.example.com", "api_external_url": "https://api.example.com",
          "storage_public_url": "https://api.example.com:444"}, "another host name than GATEHOUSE_API_EXTERNAL_URL"),
    ],
)
def test_a_storage_origin_sharing_the_app_host_is_refused(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(**overrides)
    assert message in str(refused.value)


def test_settings_from_a_secrets_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd's LoadCredential= (or a mounted secrets folder) gives a setting as a file named after
    its variable; a variable in the environment still wins."""
    (tmp_path / "GATEHOUSE_SECRET_KEY").write_text("sb_secret_" + "f" * 32 + "\n")
    (tmp_path / "GATEHOUSE_SMTP_PASSWORD").write_text("from a file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_settings()
    assert settings.secret_key == "sb_secret_" + "f" * 32
    assert settings.smtp_password == "from a file"
    monkeypatch.setenv("GATEHOUSE_SMTP_PASSWORD", "from the environment")
    assert load_settings().smtp_password == "from the environment"
    monkeypatch.setenv("GATEHOUSE_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not a folder"):
        load_settings()
