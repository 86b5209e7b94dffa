"""The effective configuration as the settings page shows it: every setting's value, where it
came from and what it does, with secrets masked.

What is secret is what each setting declares (``json_schema_extra``, read by ``config.secrecy``),
never a guess from its name: a secret's value is replaced whole, and a URL declared to carry a
password has only its password replaced. A password inside any other URL is masked as well.
Keys left unset come from ``keys.json``; the secret and ``service_role`` keys are never shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from gatehouse.core.config import OAuthProviderSettings, Settings, secrecy, secrets_dir
from gatehouse.core.keys import KeySet

MASK = "••••••••"
#: Settings that ``load_keys`` falls back to ``keys.json`` for, and the key set's value of each.
KEY_SETTINGS = ("jwt_private_key", "publishable_key", "secret_key", "anon_key", "service_role_key",
                "authenticator_password")


@dataclass(frozen=True)
class Row:
    name: str
    variable: str
    value: str
    source: str
    description: str
    secret: bool = False


def _mask_url(value: str) -> str:
    parts = urlsplit(value)
    if not parts.password:
        return value
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


def shown(value: object, kind: str) -> str:
    """A setting's value as text, with what it declares secret masked."""
    if value is None or value == "":
        return "" if kind == "none" else "(not set)"
    if kind == "value":
        return MASK
    text = str(value)
    return _mask_url(text) if "://" in text else text


def _source(variable: str, value: object, default: object, environ: Mapping[str, str],
            dotenv: Mapping[str, str | None]) -> str:
    if variable in environ:
        return "environment"
    if dotenv.get(variable) is not None:
        return ".env file"
    folder = secrets_dir(environ)
    if folder is not None and (folder / variable).is_file():
        return f"file in {folder}"
    return "default" if value == default else "command line"


def settings_rows(settings: Settings, keys: KeySet, environ: Mapping[str, str],
                  dotenv: Mapping[str, str | None]) -> list[Row]:
    """One row per setting (each sign-in provider's fields too), in the order Settings declares."""
    rows: list[Row] = []
    key_values = {"jwt_private_key": "set", "publishable_key": keys.publishable_key, "secret_key": "set",
                  "anon_key": keys.anon_key, "service_role_key": "set", "authenticator_password": "set"}
    for name, info in Settings.model_fields.items():
        if name == "oauth_providers":
            rows += _provider_rows(settings.oauth_providers, environ, dotenv)
            continue
        variable = "GATEHOUSE_" + name.upper()
        value = getattr(settings, name)
        kind = secrecy(Settings, name)
        source = _source(variable, value, info.default, environ, dotenv)
        if name in KEY_SETTINGS and value is None:
            value = key_values[name]
            minted = name in ("anon_key", "service_role_key") and settings.jwt_private_key is not None
            source = "derived (signed by the root key at start)" if minted else "keys.json"
        rows.append(Row(name, variable, shown(value, kind), source, info.description or "", kind != "none"))
    return rows


def _provider_rows(providers: Mapping[str, OAuthProviderSettings], environ: Mapping[str, str],
                   dotenv: Mapping[str, str | None]) -> list[Row]:
    rows: list[Row] = []
    for provider in providers.values():
        for field, info in OAuthProviderSettings.model_fields.items():
            if field == "name":
                continue
            variable = f"GATEHOUSE_OAUTH_{provider.name.upper()}_{field.upper()}"
            value = getattr(provider, field)
            kind = secrecy(OAuthProviderSettings, field)
            rows.append(Row(f"oauth_providers.{provider.name}.{field}", variable, shown(value, kind),
                            _source(variable, value, info.default, environ, dotenv),
                            f"Sign-in provider {provider.name}: {field.replace('_', ' ')}.", kind != "none"))
    return rows


def derived_rows(settings: Settings) -> list[Row]:
    """The values Gatehouse works out from the settings."""
    storage = settings.storage_dir or settings.data_dir.expanduser().resolve() / "storage"
    facts = [
        ("environment", settings.environment_reason, "development or production, and why."),
        ("public_site_url", settings.public_site_url, "The web app's URL, in email links."),
        ("public_api_url", settings.public_api_url, "The API's URL, the base of the JWT issuer."),
        ("jwt_issuer", settings.jwt_issuer, "The iss claim of access tokens."),
        ("jwks_url", jwks_url(settings), "Where clients find the public keys that verify access tokens."),
        ("worker_count", str(settings.worker_count), "Worker processes."),
        ("storage_path", str(storage) if settings.storage_backend == "local" else "(s3)",
         "Folder of the local storage backend."),
        ("metrics_enabled", "yes" if settings.metrics_enabled else "no", "Whether /metrics answers."),
    ]
    return [Row(name, "", _mask_url(value), "derived", description) for name, value, description in facts]


def jwks_url(settings: Settings) -> str:
    return f"{settings.jwt_issuer}/.well-known/jwks.json"
