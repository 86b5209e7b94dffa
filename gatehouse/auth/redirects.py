"""Where a ``redirect_to`` may send people: the site itself, or an entry of the allow list.

A URL is matched on its parsed parts, never on the raw string: the scheme, then the host, then
the port, then the path. ``https://*.example.com/*`` must not admit
``https://evil.test/.example.com/``, ``https://example.com@evil.test`` or
``https://evil.test\\.example.com``, which a glob over the whole string would.

Allow-list entries (``GATEHOUSE_REDIRECT_ALLOW_LIST``, comma-separated) look like URLs:

* ``scheme://host[:port][/path]``; the scheme is ``http`` or ``https``.
* Host: a name, an IPv4 address or ``[IPv6]``. A wildcard stands only for whole labels on the
  left: ``*.example.com`` is exactly one label more (``a.example.com``, not ``example.com`` nor
  ``a.b.example.com``), ``**.example.com`` one or more. Names are compared as browsers resolve
  them: lower case, international names as punycode (UTS #46), a trailing dot ignored.
* Port: the one given, or the scheme's default (80, 443). No wildcard.
* Path: no path (or ``/``, ``/*``, ``/**``) admits any path; otherwise ``*`` matches any characters
  within one segment and ``**`` any characters across segments. The query and the fragment of a
  ``redirect_to`` are kept and never matched.

A URL with user information, a backslash, a control character or space, a percent sign or any
other character outside a host name in its host, or no ``//host`` is refused outright. The URL
the server redirects to is rebuilt from the parts it checked (host in ASCII), so the browser
goes where the check looked.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit

import idna

from gatehouse.core.config import ConfigError, Settings

__all__ = ["Pattern", "Redirects", "normalize_host"]

SCHEMES = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


def normalize_host(host: str) -> str | None:
    """The host as a browser would resolve it (lower-case ASCII, no trailing dot), or None if it is not one."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    host = host.removesuffix(".")
    if not host:
        return None
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return None
    host = host.lower()
    if not all(_LABEL.match(label) for label in host.split(".")):
        return None
    return host


@dataclass(frozen=True)
class _Target:
    """A redirect URL taken apart: what is matched, and the URL rebuilt from it."""

    scheme: str
    host: str
    port: int
    path: str
    url: str


def _host_part(netloc: str) -> str:
    """``netloc`` without its port (``urlsplit``'s ``hostname`` also lower-cases and unbrackets)."""
    if netloc.startswith("["):
        return netloc.split("]", 1)[0] + "]"
    return netloc.rsplit(":", 1)[0] if ":" in netloc else netloc


def _parse(url: str) -> _Target | None:
    if _UNSAFE.search(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.netloc or "@" in parts.netloc:
        return None
    host = normalize_host(_host_part(parts.netloc))
    if host is None:
        return None
    effective_port = port if port is not None else SCHEMES[scheme]
    netloc = host if port is None else f"{host}:{port}"
    rebuilt = urlunsplit(SplitResult(scheme, netloc, parts.path, parts.query, parts.fragment))
    return _Target(scheme, host, effective_port, parts.path or "/", rebuilt)


def _path_regex(path: str) -> re.Pattern[str] | None:
    if path in ("", "/", "/*", "/**"):
        return None
    pieces = re.split(r"(\*\*|\*)", path)
    body = "".join(".*" if piece == "**" else "[^/]*" if piece == "*" else re.escape(piece) for piece in pieces)
    return re.compile(body + r"\Z")


@dataclass(frozen=True)
class Pattern:
    """One allow-list entry, parsed once at start-up."""

    scheme: str
    labels: tuple[str, ...]  # the fixed part of the host, e.g. ("example", "com")
    wildcard: str  # "", "*" (one label) or "**" (one or more)
    port: int
    path: re.Pattern[str] | None  # None: any path

    @classmethod
    def parse(cls, text: str) -> Pattern:
        problem = f"GATEHOUSE_REDIRECT_ALLOW_LIST: {text!r} "
        if _UNSAFE.search(text) or "?" in text or "#" in text:
            raise ConfigError(problem + "may not contain spaces, backslashes, '?' or '#'")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(problem + f"is not a URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES or not parts.netloc or "@" in parts.netloc:
            raise ConfigError(problem + "must look like https://host[:port][/path] (http or https)")
        host_text = _host_part(parts.netloc)
        wildcard = ""
        for prefix in ("**.", "*."):
            if host_text.startswith(prefix):
                wildcard, host_text = prefix[:-1], host_text[len(prefix):]
                break
        if "*" in host_text:
            raise ConfigError(problem + "may use a wildcard in the host only as whole labels on the left (*.example.com)")
        host = normalize_host(host_text)
        if host is None:
            raise ConfigError(problem + "does not name a valid host")
        labels = () if host.startswith("[") else tuple(host.split("."))
        if wildcard and len(labels) < 2:
            raise ConfigError(problem + "needs at least two fixed labels after a wildcard (*.example.com)")
        return cls(
            scheme=scheme,
            labels=labels if labels else (host,),
            wildcard=wildcard,
            port=port if port is not None else SCHEMES[scheme],
            path=_path_regex(parts.path),
        )

    def matches(self, target: _Target) -> bool:
        if target.scheme != self.scheme or target.port != self.port:
            return False
        labels = (target.host,) if target.host.startswith("[") else tuple(target.host.split("."))
        extra = len(labels) - len(self.labels)
        if extra < 0 or labels[extra:] != self.labels:
            return False
        wanted = {"": extra == 0, "*": extra == 1, "**": extra >= 1}[self.wildcard]
        return wanted and (self.path is None or self.path.match(target.path) is not None)


class Redirects:
    """Decides where a ``redirect_to`` may lead: the site itself or the allow list, else the site URL."""

    def __init__(self, settings: Settings) -> None:
        self.site_url = settings.public_site_url
        site = _parse(self.site_url)
        self._site = (site.scheme, site.host, site.port) if site is not None else None
        self._patterns = [Pattern.parse(item.strip()) for item in settings.redirect_allow_list.split(",") if item.strip()]

    def check(self, url: str | None) -> str | None:
        """The URL to redirect to (rebuilt from its checked parts), or None if it is not allowed."""
        if not url:
            return None
        target = _parse(url)
        if target is None:
            return None
        if (target.scheme, target.host, target.port) == self._site:
            return target.url
        if any(pattern.matches(target) for pattern in self._patterns):
            return target.url
        return None

    def allowed(self, url: str | None) -> str:
        """``url`` if it may be used, else the site URL."""
        return self.check(url) or self.site_url

    def confirm_link(self, link_token: str, verify_type: str, redirect_to: str | None) -> str:
        """The email link of the server-side flow: ``{SITE_URL}/auth/confirm?token_hash=...&type=...``."""
        query: dict[str, Any] = {"token_hash": link_token, "type": verify_type}
        target = self.check(redirect_to)
        if target and target != self.site_url:
            query["next"] = target
        return f"{self.site_url}/auth/confirm?{urlencode(query)}"
