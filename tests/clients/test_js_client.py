"""The official supabase-js client, unmodified, against a real Gatehouse.

``tests/clients/js/auth_flow.mjs`` runs the tutorial's auth flow with ``@supabase/supabase-js``
(the exact version pinned in ``package.json``/``package-lock.json``) and exits non-zero on the
first broken expectation. Without node or npm the test is skipped, except under CI (``CI``
set), where a skip would hide a missing toolchain: there it fails.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.auth.helpers import PASSWORD
from tests.support import ConfirmedSession, RunningServer, npm_ci, once_served, require_tool, run_sql

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "auth_flow.mjs"
FLOW_TIMEOUT = 120


def _require(tool: str) -> str:
    return require_tool(tool, "the supabase-js compatibility test needs Node.js (node and npm)")


def _output(result: subprocess.CompletedProcess[str] | subprocess.TimeoutExpired) -> str:
    def text(value: str | bytes | None) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")

    return f"--- stdout ---\n{text(result.stdout)}\n--- stderr ---\n{text(result.stderr)}"


@pytest.fixture(scope="session")
def node() -> list[str]:
    """The command that starts node, with a global WebSocket on Node 20.

    supabase-js 2.110+ declares ``engines.node >= 22`` and its realtime client, built by
    ``createClient``, throws on a Node without a global ``WebSocket``. Node 20 has one behind
    ``--experimental-websocket`` (20.10+); Node 22+ has it by default. The auth flow never
    opens a socket: the flag only lets the unmodified client be constructed.
    """
    path = _require("node")
    version = subprocess.run(
        [path, "-p", "process.versions.node"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    major = int(version.split(".")[0])
    return [path, "--experimental-websocket"] if major < 22 else [path]


@pytest.fixture(scope="session")
def js_client(node: list[str]) -> Path:
    """tests/clients/js with its node_modules installed from package-lock.json (``npm ci``)."""
    npm_ci(JS_DIR, JS_DIR / "node_modules" / "@supabase" / "supabase-js")
    return JS_DIR


def test_supabase_js_auth_flow(
    node: list[str], js_client: Path, server_factory: Callable[..., RunningServer]
) -> None:
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    command = [*node, str(SCRIPT), server.url, server.keys.publishable_key]
    env = os.environ | {"NO_COLOR": "1"}
    try:
        result = subprocess.run(
            command, cwd=js_client, env=env, capture_output=True, text=True, timeout=FLOW_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"auth_flow.mjs timed out after {FLOW_TIMEOUT}s\n{_output(exc)}\n--- server log ---\n{server.log()}",
            pytrace=False,
        )
    print(result.stdout)  # the steps, one JSON line each: shown with -rP or -s
    assert result.returncode == 0, (
        f"supabase-js auth flow failed (exit {result.returncode})\n{_output(result)}"
        f"\n--- server log ---\n{server.log()}"
    )
    assert '"step":"done"' in result.stdout, f"auth_flow.mjs did not finish\n{_output(result)}"


def test_ssr_renders_that_cannot_store_cookies_keep_the_session(
    node: list[str], js_client: Path, server_factory: Callable[..., RunningServer],
    confirmed_session: ConfirmedSession,
) -> None:
    """@supabase/ssr: a render that refreshes but cannot set cookies leaves the parent token in the browser."""
    server = server_factory(env={
        "GATEHOUSE_RATE_LIMITS_ENABLED": "false",
        "GATEHOUSE_JWT_EXPIRY": "20",  # inside the client's refresh margin: every render refreshes
        "GATEHOUSE_REFRESH_TOKEN_REUSE_INTERVAL": "0",  # no window: only the parent rule can help
    })
    email, _ = confirmed_session(server)
    command = [*node, str(JS_DIR / "ssr_refresh.mjs"), server.url, server.keys.publishable_key, email, PASSWORD]
    result = subprocess.run(
        command, cwd=js_client, env=os.environ | {"NO_COLOR": "1"}, capture_output=True, text=True,
        timeout=FLOW_TIMEOUT, check=False,
    )
    assert result.returncode == 0, f"ssr_refresh.mjs failed\n{_output(result)}\n--- server log ---\n{server.log()}"
    assert '"step":"done"' in result.stdout


def test_supabase_js_signed_url_with_a_transform_serves_the_resized_image(
    node: list[str], js_client: Path, server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    from PIL import Image

    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    poster = tmp_path / "poster.png"
    Image.new("RGB", (64, 64), "teal").save(poster, format="PNG")
    command = [*node, str(JS_DIR / "signed_transform.mjs"), server.url, server.keys.secret_key, str(poster)]
    result = subprocess.run(command, cwd=js_client, env=os.environ | {"NO_COLOR": "1"}, capture_output=True,
                            text=True, timeout=FLOW_TIMEOUT, check=False)
    assert result.returncode == 0, f"signed_transform.mjs failed\n{_output(result)}\n--- server log ---\n{server.log()}"
    assert '"step":"done"' in result.stdout


def test_supabase_js_mfa_and_anonymous_sign_in(
    node: list[str], js_client: Path, server_factory: Callable[..., RunningServer]
) -> None:
    """``mfa_flow.mjs``: enrol, challengeAndVerify with otpauth's codes, the assurance levels, a
    replayed code, unenrol; and signInAnonymously."""
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_ANONYMOUS_SIGN_INS": "true"})
    email = f"js-mfa-{uuid.uuid4().hex[:8]}@example.com"
    created = httpx.post(f"{server.url}/auth/v1/admin/users", headers={"apikey": server.keys.secret_key},
                         json={"email": email, "password": PASSWORD, "email_confirm": True}, timeout=10)
    assert created.status_code == 200, created.text
    result = subprocess.run(
        [*node, str(JS_DIR / "mfa_flow.mjs"), server.url, server.keys.publishable_key, email, PASSWORD],
        cwd=js_client, env=os.environ | {"NO_COLOR": "1"}, capture_output=True, text=True, timeout=FLOW_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{_output(result)}\n--- server log ---\n{server.log()[-3000:]}"
    assert '"step":"done"' in result.stdout


def test_supabase_js_realtime_broadcast_and_presence(
    node: list[str], js_client: Path, server_factory: Callable[..., RunningServer]
) -> None:
    """supabase-js's realtime (vsn 2.0.0: array frames, binary broadcast pushes): broadcast with ack
    and self, presence join and leave, between two clients."""
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    command = [*node, str(JS_DIR / "realtime_flow.mjs"), server.url, server.keys.publishable_key]
    result = subprocess.run(command, cwd=js_client, env=os.environ | {"NO_COLOR": "1"}, capture_output=True,
                            text=True, timeout=FLOW_TIMEOUT, check=False)
    assert result.returncode == 0, f"realtime_flow.mjs failed\n{_output(result)}\n--- server log ---\n{server.log()}"
    assert '"step":"done"' in result.stdout


JS_NOTES = """
CREATE TABLE public.rt_js_notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner uuid NOT NULL DEFAULT auth.uid(),
    title text NOT NULL,
    shared boolean NOT NULL DEFAULT false
);
ALTER TABLE public.rt_js_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY "see own or shared" ON public.rt_js_notes FOR SELECT TO authenticated USING (owner = auth.uid() OR shared);
CREATE POLICY "write own" ON public.rt_js_notes FOR ALL TO authenticated USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.rt_js_notes TO authenticated;
ALTER PUBLICATION supabase_realtime ADD TABLE public.rt_js_notes;
NOTIFY gatehouse_schema, 'reload';
"""


def test_supabase_js_postgres_changes_under_rls(
    node: list[str], js_client: Path, server_factory: Callable[..., RunningServer],
    confirmed_session: ConfirmedSession, database_url: str,
) -> None:
    """supabase-js's postgres_changes with two signed-in users: RLS decides who hears of a row,
    filters narrow, updates and deletes arrive, and a refreshed token keeps the subscription."""
    run_sql(database_url, JS_NOTES)
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    once_served(lambda: httpx.get(f"{server.url}/rest/v1/rt_js_notes", headers={"apikey": server.keys.publishable_key}))
    alice, _ = confirmed_session(server)
    bob, _ = confirmed_session(server)
    command = [*node, str(JS_DIR / "realtime_changes.mjs"), server.url, server.keys.publishable_key, alice, bob, PASSWORD]
    result = subprocess.run(command, cwd=js_client, env=os.environ | {"NO_COLOR": "1"}, capture_output=True,
                            text=True, timeout=FLOW_TIMEOUT, check=False)
    assert result.returncode == 0, f"realtime_changes.mjs failed\n{_output(result)}\n--- server log ---\n{server.log()}"
    assert '"step":"done"' in result.stdout
