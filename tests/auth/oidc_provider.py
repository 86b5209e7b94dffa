"""A real OpenID Connect provider on loopback (node-oidc-provider, tests/auth/oidc/provider.mjs),
and a browser stand-in that signs in on its pages.

The provider's development log-in page takes any name (see provider.mjs for how the name decides
the email and whether it is verified) and then asks for consent. ``ProviderBrowser`` follows
redirects itself, keeping cookies like a browser, fills both pages, and stops at the first
redirect to a URL that is not the provider's or Gatehouse's callback: what the app would receive.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx

from gatehouse.core.embedded import free_port
from tests.support import npm_ci, require_tool

FOLDER = Path(__file__).parent / "oidc"
_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.DOTALL)
_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.DOTALL)


def require(tool: str) -> str:
    return require_tool(tool, "the provider sign-in tests run a real OpenID provider on Node.js")


def install() -> None:
    """tests/auth/oidc's node_modules from its package-lock.json (``npm ci``), when missing or stale."""
    npm_ci(FOLDER, FOLDER / "node_modules")


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class OIDCProvider:
    issuer: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(clients: list[Client], log: Path) -> OIDCProvider:
    """The provider on a free loopback port, with these clients registered; its output in ``log``."""
    install()
    port = free_port()
    registered = [{"client_id": c.client_id, "client_secret": c.client_secret, "redirect_uris": c.redirect_uris}
                  for c in clients]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [require("node"), str(FOLDER / "provider.mjs"), str(port), json.dumps(registered)],
            cwd=FOLDER, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        if "listening" in log.read_text(errors="replace").split():
            return OIDCProvider(f"http://127.0.0.1:{port}", process, log)
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("the OpenID provider did not start:\n" + log.read_text(errors="replace"))


class ProviderBrowser:
    """A browser stand-in: its own cookies, redirects followed one by one, the provider's pages filled."""

    def __init__(self, provider: OIDCProvider, *, gatehouse: str) -> None:
        self.provider = provider.issuer
        self.gatehouse = gatehouse
        self.http = httpx.Client(timeout=15, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def open(self, url: str, *, login: str | None = None, stop_before: str | None = None) -> httpx.URL:
        """Open ``url`` and go where it leads, signing in at the provider as ``login``.

        Returns the first URL outside the provider and Gatehouse's /auth/v1, or the URL starting
        with ``stop_before`` (not opened), whichever comes first.
        """
        response = self.http.get(url)
        for _ in range(20):
            if response.status_code in (301, 302, 303, 307, 308):
                target = urljoin(str(response.url), response.headers["location"])
                if stop_before and target.startswith(stop_before):
                    return httpx.URL(target)
                if not target.startswith((self.provider, f"{self.gatehouse}/auth/v1/")):
                    return httpx.URL(target)
                response = self.http.get(target)
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            form = _FORM.search(response.text)
            assert form is not None, response.text[:1000]
            action = urljoin(str(response.url), form.group(1))
            fields = dict(_HIDDEN.findall(form.group(2)))
            if 'name="login"' in form.group(2):
                assert login is not None, "the provider asks who signs in"
                fields |= {"login": login, "password": "any"}
            response = self.http.post(action, data=fields)
        raise AssertionError("too many redirects")


__all__ = ["Client", "OIDCProvider", "ProviderBrowser", "require", "start"]
