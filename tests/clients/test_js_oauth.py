"""supabase-js, unmodified, signing in with a provider (PKCE): ``tests/clients/js/oauth_flow.mjs``
against Gatehouse and a real OpenID Connect provider on loopback.

The script prints the URL ``signInWithOAuth`` built; the test's browser stand-in opens it (the
provider's log-in and consent pages) and hands the URL it came back to on the script's stdin;
the script then exchanges the code for a session.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gatehouse.core.embedded import free_port
from tests.auth import oidc_provider
from tests.auth.oidc_provider import ProviderBrowser
from tests.clients.test_js_client import js_client, node  # noqa: F401 - the shared fixtures
from tests.support import RunningServer

SECRET = "the-supabase-js-client-secret-0123456789abcdef"
APP = "https://app.example.com"


def test_supabase_js_sign_in_with_oauth_pkce(
    node: list[str],  # noqa: F811
    js_client: Path,  # noqa: F811
    server_factory: Callable[..., RunningServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    port = free_port()
    provider = oidc_provider.start(
        [oidc_provider.Client("gatehouse-js", SECRET, [f"http://127.0.0.1:{port}/auth/v1/callback"])],
        tmp_path_factory.mktemp("oidc") / "provider.log",
    )
    browser = ProviderBrowser(provider, gatehouse=f"http://127.0.0.1:{port}")
    try:
        server = server_factory(port=port, env={
            "GATEHOUSE_OAUTH_KEYCLOAK_CLIENT_ID": "gatehouse-js", "GATEHOUSE_OAUTH_KEYCLOAK_CLIENT_SECRET": SECRET,
            "GATEHOUSE_OAUTH_KEYCLOAK_ISSUER": provider.issuer, "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
            "GATEHOUSE_REDIRECT_ALLOW_LIST": f"{APP}/**",
        })
        script = subprocess.Popen(
            [*node, str(js_client / "oauth_flow.mjs"), server.url, server.keys.publishable_key, "keycloak",
             f"{APP}/auth/callback"],
            cwd=js_client, env=os.environ | {"NO_COLOR": "1"}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        assert script.stdout is not None and script.stdin is not None
        first = script.stdout.readline()
        assert first, script.communicate(timeout=30)
        url = json.loads(first)["url"]
        back = browser.open(url, login=f"js-{uuid.uuid4().hex[:8]}@example.com")
        assert str(back).startswith(f"{APP}/auth/callback?code="), back
        out, err = script.communicate(f"{back}\n", timeout=60)
        assert script.returncode == 0, f"{out}\n{err}\n--- server log ---\n{server.log()[-3000:]}"
        assert '"step":"done"' in out
    finally:
        browser.close()
        provider.stop()
