"""Small wire-level helpers for the auth tests: one place that knows the request shapes."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import jwt

from tests.support import RunningServer

VERSIONED = {"X-Supabase-Api-Version": "2024-01-01"}
PASSWORD = "a long passphrase 4 tests"
LINK = re.compile(r"/auth/confirm\?token_hash=([\w-]+)&type=(\w+)")
CODE = re.compile(r"code: (\d{6})")


def claims(token: str) -> dict[str, Any]:
    """An access token's claims, unverified: what a client would read from it."""
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


class Auth:
    """Raw HTTP against /auth/v1, with the publishable key (or another) as apikey."""

    def __init__(self, server: RunningServer, key: str | None = None, *, source_ip: str | None = None) -> None:
        """``source_ip``: connect from another loopback address (127.0.0.2, ...), as another client."""
        self.server = server
        self.http = httpx.Client(
            base_url=f"{server.url}/auth/v1",
            headers={"apikey": key or server.keys.publishable_key} | VERSIONED,
            timeout=15,
            transport=httpx.HTTPTransport(local_address=source_ip) if source_ip else None,
        )

    def close(self) -> None:
        self.http.close()

    def post(self, path: str, body: Any = None, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.post(path, json=body, headers=headers, **kwargs)

    def get(self, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.get(path, headers=headers, **kwargs)

    def put(self, path: str, body: Any, *, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.put(path, json=body, headers=headers)

    def messages(self, email: str) -> list[dict[str, Any]]:
        return httpx.get(f"{self.server.url}/_inbox/messages", params={"to": email}).json()["messages"]  # type: ignore[no-any-return]

    def latest_link(self, email: str) -> tuple[str, str]:
        match = LINK.search(self.messages(email)[0]["text"])
        assert match, self.messages(email)[0]["text"]
        return match.group(1), match.group(2)

    def sign_up(self, email: str, password: str = PASSWORD, **extra: Any) -> httpx.Response:
        return self.post("/signup", {"email": email, "password": password, **extra})

    def confirmed_user(self, email: str | None = None, password: str = PASSWORD) -> tuple[str, dict[str, Any]]:
        """Sign up, confirm through the emailed link, and return (email, session)."""
        email = email or new_email()
        assert self.sign_up(email, password).status_code == 200
        token_hash, _ = self.latest_link(email)
        verified = self.post("/verify", {"type": "email", "token_hash": token_hash})
        assert verified.status_code == 200, verified.text
        return email, verified.json()

    def log_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.post("/token?grant_type=password", {"email": email, "password": password})

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.post("/token?grant_type=refresh_token", {"refresh_token": refresh_token})


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not contents (for enumeration checks)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__
