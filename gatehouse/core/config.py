"""Settings: read once from ``GATEHOUSE_*`` variables and ``.env``, validated, passed down.

Nothing reads the environment after start-up; code receives a ``Settings`` object.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Where things live
    data_dir: Path = Field(Path(".gatehouse"), description="Data folder: embedded database, keys, stored files.")
    database_url: str | None = Field(
        None,
        description="PostgreSQL URL of a role that may create roles and schemas. Unset: run the embedded PostgreSQL.",
    )
    migrations_dir: Path | None = Field(
        None, description="Folder of your own .sql migrations, applied after the built-in ones."
    )

    # Serving
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    workers: int | None = Field(None, ge=1, description="Worker processes. Unset: the number of CPU cores.")
    site_url: str | None = Field(
        None, description="Public URL of the web app, used in email links. Unset: http://HOST:PORT."
    )
    api_external_url: str | None = Field(
        None, description="Public URL of the API, the JWT issuer's base. Unset: the site URL."
    )
    env: Literal["development", "production"] | None = Field(
        None, description="development or production. Unset: development when bound to loopback."
    )

    # Embedded PostgreSQL
    embedded_db_port: int = Field(
        54322, ge=0, le=65535, description="Loopback port of the embedded PostgreSQL (0: pick a free one)."
    )

    # Database pools
    db_pool_min_size: int = Field(1, ge=0, description="Connections each worker keeps open per pool.")
    db_pool_max_size: int = Field(10, ge=1, description="Most connections each worker opens per pool.")
    db_connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a database connection.")

    # Keys (taken from the data folder's keys.json when unset)
    jwt_private_key: str | None = Field(None, description="PEM of the ES256 (P-256) signing key.")
    publishable_key: str | None = Field(None, description="The publishable API key (sb_publishable_...).")
    secret_key: str | None = Field(None, description="The secret API key (sb_secret_...).")
    anon_key: str | None = Field(None, description="Legacy anon JWT API key.")
    service_role_key: str | None = Field(None, description="Legacy service_role JWT API key.")
    authenticator_password: str | None = Field(
        None, description="Password of the authenticator database role."
    )

    # Tokens
    jwt_expiry: int = Field(3600, ge=1, description="Access-token lifetime in seconds.")

    # Requests and logs
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest JSON request body in bytes.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="json (one object per line) or text.")

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql:// (for example postgresql://user:pass@host:5432/db)")
        return value

    @field_validator("site_url", "api_external_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def is_loopback(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def environment(self) -> str:
        if self.env is not None:
            return self.env
        return "development" if self.is_loopback else "production"

    @property
    def public_site_url(self) -> str:
        if self.site_url:
            return self.site_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def public_api_url(self) -> str:
        return self.api_external_url or self.public_site_url

    @property
    def jwt_issuer(self) -> str:
        return f"{self.public_api_url}/auth/v1"

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, ``.env`` and explicit overrides (CLI flags).

    Raises ConfigError with one line per bad setting, naming the variable.
    """
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "GATEHOUSE_" + "_".join(str(part) for part in error["loc"]).upper()
            lines.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
