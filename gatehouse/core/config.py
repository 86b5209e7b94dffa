"""Settings: read once from ``GATEHOUSE_*`` variables and ``.env``, validated, passed down.

Nothing reads the environment after start-up; code receives a ``Settings`` object.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1), with or without brackets."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


#: What each ``GATEHOUSE_OAUTH_<NAME>_<FIELD>`` variable may set, by its field suffix.
OAUTH_FIELDS = ("CLIENT_ID", "CLIENT_SECRET", "ISSUER", "SCOPES", "ENABLED", "URL", "TENANT", "TEAM_ID", "KEY_ID",
                "PRIVATE_KEY")
OAUTH_PREFIX = "GATEHOUSE_OAUTH_"

#: Declared on each setting that holds a secret (``json_schema_extra``): never shown in full, not
#: even to the dashboard's administrators. URL: only the password inside the URL is. PUBLIC says
#: a key-like setting is meant to be public (a publishable key). Read by ``secrecy``.
SECRET: JsonDict = {"secret": "value"}
SECRET_IN_URL: JsonDict = {"secret": "url"}
PUBLIC: JsonDict = {"secret": "none"}


def secrecy(model: type[BaseModel], name: str) -> str:
    """``value``, ``url`` or ``none``: what of a setting must never be shown, as it declares."""
    extra = model.model_fields[name].json_schema_extra
    kind = extra.get("secret") if isinstance(extra, dict) else None
    return kind if isinstance(kind, str) else "none"


class OAuthProviderSettings(BaseModel):
    """One sign-in provider, from ``GATEHOUSE_OAUTH_<NAME>_*``. Which names are built in, and what
    each field means for them, is auth.oauth.providers' business; this is only the settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The name clients pass as ``provider=``: NAME lowercased (``GITHUB`` -> ``github``).
    name: str
    #: One client id, or several separated by commas: the first signs in through the browser, and
    #: ID tokens (``signInWithIdToken``) may name any of them as their audience (web, iOS, Android).
    client_id: str = ""
    client_secret: str = Field("", json_schema_extra=SECRET)
    issuer: str = ""
    scopes: str = ""
    enabled: bool = True
    url: str = ""
    tenant: str = ""
    #: Apple: the team, the key's id and the key (PEM text, or the path of the .p8 file) that sign
    #: the client secret Apple wants as a JWT.
    team_id: str = ""
    key_id: str = ""
    private_key: str = Field("", json_schema_extra=SECRET)

    @property
    def client_ids(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.client_id.split(",") if part.strip())


def oauth_variables(environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> dict[str, OAuthProviderSettings]:
    """The providers configured by ``GATEHOUSE_OAUTH_<NAME>_<FIELD>`` variables (the environment
    over ``.env``); raises ConfigError naming a variable whose field is not one of OAUTH_FIELDS."""
    found: dict[str, dict[str, str]] = {}
    merged = {k: v for k, v in dotenv.items() if v is not None} | dict(environ)
    for key, value in merged.items():
        upper = key.upper()
        if not upper.startswith(OAUTH_PREFIX):
            continue
        rest = upper[len(OAUTH_PREFIX):]
        field = next((f for f in sorted(OAUTH_FIELDS, key=len, reverse=True) if rest.endswith("_" + f)), None)
        name = rest[: -len(field) - 1].lower() if field else ""
        if field is None or not re.fullmatch(r"[a-z0-9][a-z0-9_]{0,62}", name):
            raise ConfigError(
                f"invalid configuration:\n  {key}: not a provider setting; use GATEHOUSE_OAUTH_<NAME>_<FIELD> with "
                f"NAME of letters, digits and _ and FIELD one of {', '.join(OAUTH_FIELDS)}"
            )
        found.setdefault(name, {})[field.lower()] = value.strip()
    providers: dict[str, OAuthProviderSettings] = {}
    for name, fields in sorted(found.items()):
        try:
            providers[name] = OAuthProviderSettings(name=name, **fields)
        except ValidationError as exc:
            lines = [f"GATEHOUSE_OAUTH_{name.upper()}_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                     for e in exc.errors()]
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    return providers


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
        json_schema_extra=SECRET_IN_URL,
    )
    migrations_dir: Path | None = Field(
        None, description="Folder of your own .sql migrations, applied after the built-in ones."
    )
    starter_schema: Literal["tutorial", "none"] = Field(
        "tutorial",
        description="tutorial: the user-management starter (profiles, its trigger, the avatars bucket and their "
        "policies) is built in. none: left out, so the tutorial's own SQL applies cleanly.",
    )

    # Serving
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    workers: int | None = Field(None, ge=1, description="Worker processes. Unset: the number of CPU cores.")
    trusted_proxies: str = Field(
        "",
        description="Addresses or networks of the reverse proxies in front of Gatehouse, comma-separated "
        "(e.g. 10.0.0.5,10.1.0.0/16). From them, the client's address is taken from X-Forwarded-For (the "
        "nearest address not itself a trusted proxy) and the scheme from X-Forwarded-Proto; from anyone else "
        "both headers are ignored. Unset: ignored from everyone.",
    )
    site_url: str | None = Field(
        None, description="Public URL of the web app, used in email links. Unset: http://HOST:PORT."
    )
    api_external_url: str | None = Field(
        None, description="Public URL of the API, the JWT issuer's base. Unset: http://HOST:PORT."
    )
    env: Literal["development", "production"] | None = Field(
        None,
        description="development or production. Unset: development only when Gatehouse listens on loopback "
        "and the site URL is http on a loopback host; production otherwise.",
    )

    # Embedded PostgreSQL
    embedded_db_port: int = Field(
        0, ge=0, le=65535,
        description="Loopback port of the embedded PostgreSQL. 0: a free one, remembered in the data folder.",
    )

    # Database pools
    db_pool_min_size: int = Field(1, ge=0, description="Connections each worker keeps open per pool.")
    db_pool_max_size: int = Field(10, ge=1, description="Most connections each worker opens per pool.")
    db_connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a database connection.")
    database_read_url: str | None = Field(
        None,
        description="PostgreSQL URL of a streaming replica of GATEHOUSE_DATABASE_URL's server. The data API's "
        "GET and HEAD reads, storage downloads and listings go there, except a caller's reads until the replica "
        "has replayed that caller's last write (read-your-writes). Gatehouse logs in there as authenticator "
        "(whose password replicates); the URL's own user and password are not used. Auth never reads there.",
        json_schema_extra=SECRET_IN_URL,
    )
    database_read_max_lag: float = Field(
        5.0, gt=0,
        description="Seconds the replica may lag behind the primary before every read goes to the primary again.",
    )
    database_direct_url: str | None = Field(
        None,
        description="When GATEHOUSE_DATABASE_URL goes through a pooler in transaction mode (pgbouncer): the same "
        "database's URL on the PostgreSQL server itself, for what a pooler cannot carry (migrations and their "
        "session lock, every LISTEN). Set, the pools keep no prepared statements and send no startup settings.",
        json_schema_extra=SECRET_IN_URL,
    )
    statement_timeout: int = Field(
        8000, ge=0, description="Milliseconds a request's SQL may run before it is cancelled (0: no limit)."
    )

    # Data API
    rest_schemas: str = Field("public", description="Comma-separated schemas the data API exposes; the first is the default.")
    rest_max_rows: int = Field(1000, ge=1, description="Most rows one data API read returns.")
    rest_tx_end: Literal["commit", "commit-allow-override", "rollback", "rollback-allow-override"] = Field(
        "commit",
        description="How data API requests end (PostgREST's db-tx-end): commit, or rollback (nothing kept: for "
        "tests); -allow-override lets a request ask for the other with Prefer: tx=commit|rollback.",
    )
    rest_allow_unfiltered_writes: bool = Field(
        False, description="Allow PATCH and DELETE without a filter (they change every row the caller may see)."
    )
    rest_explain: bool = Field(
        False, description="Answer Accept: application/vnd.pgrst.plan (+json, +text) with the statement's EXPLAIN, run "
        "as the caller (PostgREST's db-plan-enabled): off, since plans show policies and table sizes.",
    )
    rest_aggregates: bool = Field(
        False, description="Allow count(), sum(), avg(), max() and min() in select (PostgREST's "
        "db-aggregates-enabled): off, since one can scan a whole table; a statement timeout per role bounds them.",
    )

    # Realtime
    realtime_max_channels_per_client: int = Field(
        100, ge=1, description="Most channels one realtime socket may join (upstream's max_channels_per_client)."
    )
    realtime_max_events_per_second: int = Field(
        100, ge=1, description="Most frames a realtime socket may send a second; a channel sending more is closed."
    )
    realtime_max_payload_bytes: int = Field(
        262144, ge=1024, description="Largest realtime frame (a broadcast, a presence track) in bytes."
    )
    realtime_max_queued_messages: int = Field(
        1000, ge=10, description="Messages waiting for one realtime client; a client that falls this far behind is disconnected."
    )
    realtime_heartbeat_timeout: float = Field(
        60, gt=0, description="Seconds a realtime socket may stay silent (the clients heartbeat every 25 s) before it is closed."
    )
    realtime_retention: float = Field(
        600, gt=0, description="Seconds a captured database change stays in realtime.changes; a process cut off from "
        "the database for longer misses older changes.",
    )
    realtime_poll_interval: float = Field(
        1.0, gt=0, description="Seconds between reads of realtime.changes without a notification: the most a lost "
        "NOTIFY can delay a change.",
    )
    realtime_node_timeout: float = Field(
        30, gt=0, description="Seconds after which a silent Gatehouse process's presences are removed by the others."
    )

    # Keys (taken from the data folder's keys.json when unset)
    jwt_private_key: str | None = Field(None, description="PEM of the ES256 (P-256) signing key: the root key, from "
                                         "which other secrets are derived.", json_schema_extra=SECRET)
    publishable_key: str | None = Field(None, description="The publishable API key (sb_publishable_...).",
                                         json_schema_extra=PUBLIC)
    secret_key: str | None = Field(None, description="The secret API key (sb_secret_...).", json_schema_extra=SECRET)
    anon_key: str | None = Field(None, description="Legacy anon JWT API key.", json_schema_extra=PUBLIC)
    service_role_key: str | None = Field(None, description="Legacy service_role JWT API key.",
                                          json_schema_extra=SECRET)
    authenticator_password: str | None = Field(
        None, description="Password of the authenticator database role.", json_schema_extra=SECRET
    )

    # Tokens
    jwt_expiry: int = Field(3600, ge=1, description="Access-token lifetime in seconds.")
    jwt_cache_size: int = Field(
        4096, ge=0, description="Verified access tokens each worker remembers, skipping their signature check on "
                                "a repeat (about 0.9 KB each; 0: none)."
    )
    refresh_token_reuse_interval: int = Field(
        10, ge=0, description="Seconds a just-rotated refresh token may still be used (returns the same successor)."
    )
    otp_expiry: int = Field(86400, ge=60, description="Lifetime of email links and codes in seconds.")
    otp_max_attempts: int = Field(
        5, ge=1, le=100, description="Wrong codes typed for an address before its emailed code stops working (the link still works)."
    )

    # Sign-up and passwords
    disable_signup: bool = Field(False, description="Refuse new sign-ups (admins can still create users).")
    mailer_autoconfirm: bool = Field(False, description="Sign users in at sign-up without email confirmation.")
    anonymous_sign_ins: bool = Field(
        False, description="Allow anonymous sign-ins (signInAnonymously): a real user with is_anonymous in its token."
    )
    secure_email_change: bool = Field(True, description="An email change must be confirmed from both addresses.")
    secure_password_change: bool = Field(
        False, description="A password change needs a sign-in within GATEHOUSE_PASSWORD_CHANGE_WINDOW or the code "
        "GET /reauthenticate mails (the nonce); current_password alone no longer does."
    )
    redirect_allow_list: str = Field(
        "",
        description="Comma-separated URLs that redirect_to may name besides the site URL: scheme://host[:port][/path], "
        "* for one left-most host label (** for several) or within the path.",
    )
    password_min_length: int = Field(8, ge=6, le=72, description="Shortest password accepted.")
    password_required_characters: str = Field(
        "",
        description="Character sets a password must each draw from, separated by ':' "
        "(e.g. abcdefghijklmnopqrstuvwxyz:ABCDEFGHIJKLMNOPQRSTUVWXYZ:0123456789).",
    )
    password_change_window: int = Field(
        86400, ge=0, description="Seconds after signing in during which a session may change its password "
        "without sending the current one."
    )
    password_check_common: bool = Field(True, description="Refuse common and leaked passwords (offline list).")
    argon2_memory_kib: int = Field(19456, ge=19456, description="Argon2id memory cost in KiB (OWASP minimum 19456).")
    argon2_time_cost: int = Field(2, ge=2, description="Argon2id iterations (OWASP minimum 2).")
    argon2_parallelism: int = Field(1, ge=1, description="Argon2id lanes.")

    # Rate limits: "N/S" = at most N requests per S seconds, counted in PostgreSQL
    rate_limits_enabled: bool = Field(True, description="Turn every rate limit on or off (off only for benchmarks).")
    rate_limit_signup: str = Field("30/300", description="Sign-ups per IP address.")
    rate_limit_token: str = Field("150/300", description="Log-ins and refreshes per IP address.")
    rate_limit_verify: str = Field("30/300", description="Verifications per IP address.")
    rate_limit_email: str = Field("30/300", description="Recover, OTP and resend requests per IP address.")
    rate_limit_email_address: str = Field("1/60", description="Emails to one address (sign-up, recover, OTP, ...).")
    rate_limit_password_attempts: str = Field(
        "10/300", description="Failed password checks per account before clients without its device cookie are "
        "slowed down (never refused; see GATEHOUSE_PASSWORD_SLOWDOWN_MAX)."
    )
    rate_limit_password_client: str = Field(
        "5/600", description="Failed password checks per client address and account; over it that address is refused "
        "for that account."
    )
    rate_limit_password_device: str = Field(
        "10/3600", description="Failed password checks per device cookie; over it the cookie is no longer trusted."
    )
    password_slowdown_max: int = Field(
        30, ge=1, le=3600, description="Longest wait in seconds between log-in attempts on an account whose failure "
        "budget is spent (the wait starts at 1 s and doubles)."
    )
    rate_limit_anonymous: str = Field("30/3600", description="Anonymous sign-ins per IP address.")
    rate_limit_mfa_verify: str = Field(
        "10/300", description="Second-factor verifications per user and factor (good codes count too)."
    )
    rate_limit_render: str = Field(
        "60/60", description="New image renders (cache misses) per IP address; the service role is not counted."
    )

    # Sign-in with other providers (GATEHOUSE_OAUTH_<NAME>_*: see auth/oauth/providers.py)
    oauth_providers: dict[str, OAuthProviderSettings] = Field(
        default_factory=dict, description="Sign-in providers, read from GATEHOUSE_OAUTH_<NAME>_<FIELD> variables."
    )
    manual_linking: bool = Field(
        False, description="Let signed-in users link another provider to their account (linkIdentity) and unlink one."
    )

    # Storage
    storage_backend: Literal["local", "s3"] = Field("local", description="Where object bytes go: local or s3.")
    storage_dir: Path | None = Field(None, description="Folder of the local backend. Unset: DATA_DIR/storage.")
    storage_max_file_size: int = Field(
        52_428_800, ge=1, description="Largest upload in bytes, whatever a bucket allows (50 MiB)."
    )
    storage_sweep_after: int = Field(
        3600, ge=1, description="At start, delete temporary upload files and unreferenced bytes older than this (seconds)."
    )
    storage_signed_upload_expiry: int = Field(7200, ge=1, description="Seconds a signed upload URL stays valid.")
    storage_resumable_expiry: int = Field(
        86_400, ge=1,
        description="Seconds an unfinished resumable (TUS) upload may sit idle before it and its chunks are deleted.",
    )
    storage_render_max_pixels_public: int = Field(
        16_000_000, ge=1,
        description="Largest source image (width x height) rendered for anonymous callers and public or signed URLs.",
    )
    storage_render_max_pixels: int = Field(
        40_000_000, ge=1,
        description="Largest source image (width x height) rendered for signed-in users and the service role.",
    )
    storage_signed_url_max_expiry: int = Field(
        604_800, ge=1, description="Longest expiresIn a signed download URL may ask for, in seconds (7 days)."
    )
    storage_public_url: str | None = Field(
        None,
        description="A separate origin (another host name) that serves object downloads, e.g. "
        "https://files.example-usercontent.com. Unset: objects are served from the app's own origin.",
    )
    storage_s3_region: str = Field(
        "local", min_length=1, max_length=64,
        description="The region the S3 protocol at /storage/v1/s3 answers for: clients must sign with it.",
    )
    storage_s3_multipart_expiry: int = Field(
        86_400, ge=60, description="Seconds before an unfinished S3 multipart upload and its parts are deleted.",
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. https://s3.eu-west-1.amazonaws.com.")
    s3_bucket: str | None = Field(None, description="S3 bucket that holds the object bytes (must exist).")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str | None = Field(None, description="S3 access key id.")
    s3_secret_access_key: str | None = Field(None, description="S3 secret access key.", json_schema_extra=SECRET)
    s3_prefix: str = Field("", description="Key prefix inside the S3 bucket.")
    s3_force_path_style: bool = Field(True, description="Path-style S3 URLs (needed by most S3-compatible servers).")

    # Mail
    smtp_host: str | None = Field(None, description="SMTP server. Unset: mail stays in the outbox (/_inbox in development).")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    smtp_user: str | None = Field(None, description="SMTP user name.")
    smtp_password: str | None = Field(None, description="SMTP password.", json_schema_extra=SECRET)
    smtp_tls: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (upgrade), tls (implicit TLS, port 465) or none."
    )
    smtp_sender_email: str = Field("noreply@localhost", description="From address of emails.")
    smtp_sender_name: str = Field("Gatehouse", description="From name of emails.")
    mail_templates_dir: Path | None = Field(None, description="Folder of Jinja templates overriding the built-in ones.")
    mail_max_attempts: int = Field(
        8, ge=1, description="Refusals by the SMTP server before a message is given up (an unreachable server never counts)."
    )

    # Admin dashboard (/_/)
    dashboard_idle_timeout: int = Field(
        1800, ge=60, description="Seconds an admin dashboard session may sit unused before it ends (30 minutes)."
    )
    dashboard_session_lifetime: int = Field(
        28800, ge=300, description="Seconds an admin dashboard session lasts at most, however busy (8 hours)."
    )

    # Requests and logs
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest JSON request body in bytes.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    metrics: bool | None = Field(
        None,
        description="Serve Prometheus metrics at /metrics (in production only to callers sending the secret key). "
        "Unset: on in development only.",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="json (one object per line), text (one line per event, for people) or auto: text when "
        "standard error is a terminal, json otherwise.",
    )
    metrics_sample_interval: float = Field(
        10.0, ge=0, description="Seconds between the rows each process writes to gatehouse.metrics_samples for the "
        "dashboard's Health page (requests, errors, latency buckets, pool use); 0 writes none.",
    )
    metrics_retention: int = Field(
        86_400, ge=3600, description="Seconds the Health page's samples are kept before they are pruned (24 hours).",
    )

    @field_validator("database_url", "database_read_url", "database_direct_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql:// (for example postgresql://user:pass@host:5432/db)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network; list the proxies' addresses, e.g. 10.0.0.5,10.1.0.0/16"
                ) from None
        return ",".join(items)

    @field_validator("site_url", "api_external_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("storage_public_url")
    @classmethod
    def _origin_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an origin such as https://files.example.com")
        if parts.path.strip("/") or parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(
                "must be an origin only (scheme, host and port), with no path, e.g. https://files.example.com"
            )
        return f"{parts.scheme}://{parts.netloc.lower()}"

    @model_validator(mode="after")
    def _topology_needs_a_server(self) -> Settings:
        for name, value in (("GATEHOUSE_DATABASE_READ_URL", self.database_read_url),
                            ("GATEHOUSE_DATABASE_DIRECT_URL", self.database_direct_url)):
            if value and not self.database_url:
                raise ValueError(f"{name} is set but GATEHOUSE_DATABASE_URL is not: a replica or a connection pooler "
                                 "belongs to a PostgreSQL server of your own, not to the embedded one")
        return self

    @model_validator(mode="after")
    def _storage_origin_apart(self) -> Settings:
        if self.storage_public_url is None:
            return self
        storage_host = urlsplit(self.storage_public_url).hostname
        apart = (("GATEHOUSE_SITE_URL", self.public_site_url), ("GATEHOUSE_API_EXTERNAL_URL", self.public_api_url))
        for name, url in apart:
            if urlsplit(url).hostname == storage_host:
                raise ValueError(
                    f"GATEHOUSE_STORAGE_PUBLIC_URL must use another host name than {name} ({url}): browsers share "
                    "cookies between ports of one host, so only another host name keeps stored files apart from the app"
                )
        return self

    @field_validator(
        "rate_limit_signup", "rate_limit_token", "rate_limit_verify", "rate_limit_email",
        "rate_limit_email_address", "rate_limit_password_attempts", "rate_limit_password_client",
        "rate_limit_password_device", "rate_limit_render", "rate_limit_mfa_verify", "rate_limit_anonymous",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        count, _, seconds = value.partition("/")
        if not (count.strip().isdigit() and seconds.strip().isdigit() and int(seconds) > 0):
            raise ValueError("must look like N/S: at most N requests per S seconds, for example 30/300")
        return value.replace(" ", "")

    @property
    def metrics_enabled(self) -> bool:
        return self.metrics if self.metrics is not None else self.environment == "development"

    @property
    def exposed_schemas(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.rest_schemas.split(",") if name.strip()) or ("public",)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def environment(self) -> str:
        return self.environment_reason.partition(":")[0]

    @property
    def environment_reason(self) -> str:
        """The mode and why, e.g. ``development: GATEHOUSE_ENV is unset and the site URL ... is on loopback``.

        Development mode opens the mail inbox (live sign-in links) and the metrics to anyone who
        can reach the server, so it must be asked for or be obvious: ``GATEHOUSE_ENV=development``,
        or no ``GATEHOUSE_ENV`` while Gatehouse listens on loopback and the site URL people use is
        plain http on a loopback host. Anything else (a TLS site URL behind a reverse proxy on
        127.0.0.1, a public name, a public bind address) is production.
        """
        if self.env is not None:
            return f"{self.env}: GATEHOUSE_ENV is {self.env}"
        if not self.is_loopback:
            return f"production: GATEHOUSE_ENV is unset and Gatehouse listens on {self.host}, not on loopback"
        url = self.public_site_url
        parts = urlsplit(url)
        if parts.scheme != "http":
            return f"production: GATEHOUSE_ENV is unset and the site URL {url} is {parts.scheme}, not plain http"
        if not is_loopback_host(parts.hostname):
            return f"production: GATEHOUSE_ENV is unset and the site URL {url} is not on a loopback host"
        return f"development: GATEHOUSE_ENV is unset and the site URL {url} is on loopback"

    @property
    def listen_url(self) -> str:
        """http://HOST:PORT as a client on this machine reaches the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def public_site_url(self) -> str:
        return self.site_url or self.listen_url

    @property
    def public_api_url(self) -> str:
        """The API's own URL (the JWT issuer's base), never the app's: as the upstream auth server does."""
        return self.api_external_url or self.listen_url

    @property
    def jwt_issuer(self) -> str:
        return f"{self.public_api_url}/auth/v1"

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


def secrets_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The folder of files that hold settings, one per file named after its variable
    (``GATEHOUSE_SECRET_KEY``): ``GATEHOUSE_SECRETS_DIR``, else the folder of systemd's
    credentials (``CREDENTIALS_DIRECTORY``, set for a unit with ``LoadCredential=``). A variable
    in the environment or ``.env`` wins over its file."""
    folder = environ.get("GATEHOUSE_SECRETS_DIR") or environ.get("CREDENTIALS_DIRECTORY")
    return Path(folder) if folder else None


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, ``.env``, the secrets folder (``secrets_dir``) and
    explicit overrides (CLI flags).

    Raises ConfigError with one line per bad setting, naming the variable.
    """
    clean = {key: value for key, value in overrides.items() if value is not None}
    if "oauth_providers" not in clean:
        clean["oauth_providers"] = oauth_variables(os.environ, dotenv_values(".env") if Path(".env").is_file() else {})
    folder = secrets_dir()
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"the secrets folder {folder} (GATEHOUSE_SECRETS_DIR or CREDENTIALS_DIRECTORY) is not a folder")
    try:
        return Settings(**clean, _secrets_dir=folder)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if error["loc"]:
                name = "GATEHOUSE_" + "_".join(str(part) for part in error["loc"]).upper()
                lines.append(f"{name}: {error['msg']}")
            else:  # a rule across settings: its message names them
                lines.append(str(error["msg"]).removeprefix("Value error, "))
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
