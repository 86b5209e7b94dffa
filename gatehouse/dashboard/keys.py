"""The keys and settings page (``/_/settings``): the effective configuration with secrets masked,
the publishable key and the JWKS, and the signing-key rotation (``core/keyring.py``).

Each rotation step is a POST carrying the CSRF token that first answers with a confirmation step
(the same form again with ``confirmed=yes``), then calls the keyring, then writes one audit row
naming the administrator and the key. A step the keyring refuses (a second standby, a switch
with no standby, a retirement while the key's tokens may be valid) is shown on the page with
its 409 and changes nothing. The secret and ``service_role`` keys never reach the page.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.core.errors import GatehouseError
from gatehouse.core.keyring import KeyRecord
from gatehouse.dashboard import audit, config_view
from gatehouse.dashboard.pages import Visit, client_ip, dashboard, render, signed_in, signed_in_form
from gatehouse.services import services

#: A kid as the key set makes them: the RFC 7638 thumbprint, 43 base64url characters.
KID = re.compile(r"[A-Za-z0-9_-]{43}")
#: How long clients may cache the JWKS (``auth/api.py`` sends ``max-age=600``).
JWKS_CACHE_SECONDS = 600


async def page(request: Request) -> Response:
    """``GET /_/settings``."""
    current = await signed_in(request)
    if isinstance(current, Response):
        return current
    return await _show(request, current)


async def _show(request: Request, current: Visit, *, status: int = 200, notice: str = "", error: str = "") -> Response:
    container = services(request)
    settings = container.settings
    dotenv = dotenv_values(".env") if Path(".env").is_file() else {}
    records = await container.keyring.records()
    return render(
        request, current, "keys_settings.html", status=status, section="settings", notice=notice, error=error,
        keys=container.keys, records=records, jwks_url=config_view.jwks_url(settings),
        standby=next((r for r in records if r.state == "standby"), None),
        retire_wait_text=duration(container.keyring.retire_wait),
        rows=config_view.settings_rows(settings, container.keys, os.environ, dotenv),
        derived=config_view.derived_rows(settings),
    )


def duration(seconds: int) -> str:
    """``7 days 1 min``, ``2 h``, ``6 min``: a wait as a person reads it."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = -(-rest // 60)
    parts = [f"{days} day{'s' if days != 1 else ''}" if days else "", f"{hours} h" if hours else "",
             f"{minutes} min" if minutes else ""]
    return " ".join(part for part in parts if part) or "0 min"


def _kid(data: dict[str, str]) -> str:
    kid = data.get("kid", "")
    if not KID.fullmatch(kid):
        raise GatehouseError("validation_failed", "That is not a key id of this server.", status=400)
    return kid


def _question(step: str, records: list[KeyRecord], kid: str, root_kid: str) -> str:
    if step == "standby":
        return ("Create a standby key? It is published in the JWKS at once and accepted, but signs nothing "
                "until you switch to it.")
    if step == "switch":
        standby = next((r for r in records if r.state == "standby"), None)
        age = time.time() - standby.created_at.timestamp() if standby and standby.created_at else None
        warning = ""
        if age is not None and age < JWKS_CACHE_SECONDS:
            warning = (f" It was published {int(age)} s ago: clients that cache the JWKS (for up to "
                       f"{JWKS_CACHE_SECONDS // 60} minutes) may not know it yet.")
        return ("Switch to the standby key? New access tokens and signed URLs are signed by it from now on; "
                "tokens signed before keep working, and nobody is signed out." + warning)
    question = ("Retire this key? It leaves the JWKS and any token it signed is refused from now on. "
                "This cannot be undone.")
    if kid == root_kid:
        question += (" This is the root (configured) key: the legacy anon and service_role JWT API keys, which "
                     "it signed, stop working too. The sb_publishable_ and sb_secret_ keys are not affected, "
                     "and secrets derived from the root key stay as they are.")
    return question


async def step(request: Request) -> Response:
    """``POST /_/settings/keys/{step}``: ``standby``, ``switch`` or ``retire`` (with ``kid``)."""
    got = await signed_in_form(request)
    if isinstance(got, Response):
        return got
    current, data = got
    assert current.session is not None
    name = request.path_params["step"]
    container = services(request)
    keyring = container.keyring
    if name not in ("standby", "switch", "retire"):
        return render(request, current, "error.html", status=404, title="Not found", message="No such step.")
    try:
        kid = _kid(data) if name == "retire" else ""
        if data.get("confirmed") != "yes":
            question = _question(name, await keyring.records(), kid, container.keys.kid)
            return render(request, current, "confirm.html", section="settings", question=question,
                          action=request.url.path, fields={"kid": kid} if kid else {},
                          about="Key" if kid else "", about_code=kid, cancel="/_/settings")
        detail: dict[str, Any]
        if name == "standby":
            made = await keyring.create_standby()
            notice, target, detail = "A standby key is published in the JWKS.", made.kid, {}
        elif name == "switch":
            new, old = await keyring.switch()
            notice, target, detail = ("The standby key signs from now on; the previous key is still accepted.",
                                      new.kid, {"previous": old.kid})
        else:
            retired = await keyring.retire(kid)
            notice, target, detail = "The key is retired.", retired.kid, {"root": retired.root}
    except GatehouseError as refused:
        status = refused.status if 400 <= refused.status < 500 else 400
        return await _show(request, current, status=status, error=refused.message)
    await audit.record(dashboard(request).accounts.pool, current.session.admin.id, f"signing_key_{name}",
                       ip=client_ip(request), target=target, detail=detail)
    return await _show(request, current, notice=notice)
