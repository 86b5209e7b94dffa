"""Anonymous sign-ins (GATEHOUSE_ANONYMOUS_SIGN_INS) and turning them into permanent users."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.helpers import PASSWORD, Auth, claims, new_email
from tests.support import RunningServer, gatehouse_command, once_served, run_sql


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_ANONYMOUS_SIGN_INS": "true", "GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture
def auth(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server)
    yield client
    client.close()


def sign_in_anonymously(auth: Auth, data: dict[str, Any] | None = None) -> dict[str, Any]:
    response = auth.post("/signup", {"data": data or {}, "gotrue_meta_security": {}})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_off_by_default(server_factory: Callable[..., RunningServer]) -> None:
    default = server_factory()
    auth = Auth(default)
    try:
        refused = auth.post("/signup", {})
        assert refused.status_code == 422 and refused.json()["error_code"] == "anonymous_provider_disabled"
        assert auth.get("/settings").json()["external"]["anonymous_users"] is False
    finally:
        auth.close()


def test_an_anonymous_user_is_real_and_marked(auth: Auth) -> None:
    assert auth.get("/settings").json()["external"]["anonymous_users"] is True
    session = sign_in_anonymously(auth, {"nickname": "guest"})
    token = claims(session["access_token"])
    assert token["is_anonymous"] is True and token["role"] == "authenticated" and token["email"] == ""
    assert [entry["method"] for entry in token["amr"]] == ["anonymous"]
    user = session["user"]
    assert user["is_anonymous"] is True and user["email"] == "" and user["identities"] == []
    assert user["app_metadata"] == {"provider": "anonymous", "providers": ["anonymous"]}
    assert user["user_metadata"] == {"nickname": "guest"}
    assert auth.get("/user", token=session["access_token"]).json()["id"] == user["id"]
    refreshed = auth.post("/token?grant_type=refresh_token", {"refresh_token": session["refresh_token"]})
    assert claims(refreshed.json()["access_token"])["is_anonymous"] is True


def test_a_password_without_an_address_is_refused(auth: Auth) -> None:
    refused = auth.post("/signup", {"password": PASSWORD})
    assert refused.status_code == 400 and refused.json()["error_code"] == "validation_failed"


def test_rls_tells_anonymous_users_apart(auth: Auth, server: RunningServer, database_url: str) -> None:
    run_sql(database_url, """
        CREATE TABLE public.anon_posts (id bigserial PRIMARY KEY, owner uuid NOT NULL DEFAULT auth.uid(), body text);
        ALTER TABLE public.anon_posts ENABLE ROW LEVEL SECURITY;
        GRANT SELECT, INSERT ON public.anon_posts TO authenticated;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO authenticated;
        CREATE POLICY "members post" ON public.anon_posts FOR INSERT TO authenticated
            WITH CHECK (owner = (SELECT auth.uid())
                        AND (SELECT (auth.jwt() ->> 'is_anonymous')::boolean) IS FALSE);
        NOTIFY gatehouse_schema, 'reload';
    """)
    session = sign_in_anonymously(auth)
    headers = {"apikey": server.keys.publishable_key, "Authorization": f"Bearer {session['access_token']}"}
    once_served(lambda: httpx.get(f"{server.url}/rest/v1/anon_posts", headers=headers, timeout=10))
    refused = httpx.post(f"{server.url}/rest/v1/anon_posts", json={"body": "spam"}, timeout=10, headers=headers)
    assert refused.status_code == 403 and refused.json()["code"] == "42501"


def test_adding_a_confirmed_address_makes_the_same_user_permanent(auth: Auth) -> None:
    session = sign_in_anonymously(auth, {"cart": ["tea"]})
    token, user_id = session["access_token"], session["user"]["id"]
    email = new_email("converted")
    asked = auth.put("/user", {"email": email}, token=token)
    assert asked.status_code == 200, asked.text
    assert asked.json()["new_email"] == email and asked.json()["is_anonymous"] is True
    token_hash, link_type = auth.latest_link(email)
    confirmed = auth.post("/verify", {"type": link_type, "token_hash": token_hash})
    assert confirmed.status_code == 200, confirmed.text
    user = auth.get("/user", token=token).json()
    assert user["id"] == user_id and user["email"] == email and user["is_anonymous"] is False
    assert user["user_metadata"] == {"cart": ["tea"]}  # the data is kept
    assert [i["provider"] for i in user["identities"]] == ["email"]
    assert user["app_metadata"]["provider"] == "email" and user["app_metadata"]["providers"] == ["email"]
    # a password now: the anonymous session signed in moments ago, so it may set one
    assert auth.put("/user", {"password": PASSWORD}, token=token).status_code == 200
    signed_in = auth.post("/token?grant_type=password", {"email": email, "password": PASSWORD})
    assert signed_in.status_code == 200 and signed_in.json()["user"]["id"] == user_id
    assert claims(signed_in.json()["access_token"])["is_anonymous"] is False


def test_anonymous_sign_ins_are_limited_per_address(server_factory: Callable[..., RunningServer]) -> None:
    limited = server_factory(env={"GATEHOUSE_ANONYMOUS_SIGN_INS": "true", "GATEHOUSE_RATE_LIMIT_ANONYMOUS": "2/3600"})
    auth = Auth(limited)
    try:
        answers = [auth.post("/signup", {}).status_code for _ in range(3)]
        assert answers == [200, 200, 429]
    finally:
        auth.close()


def test_prune_anonymous_deletes_stale_ones_and_their_files(
    auth: Auth, server: RunningServer, database_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    stale = sign_in_anonymously(auth)["user"]["id"]
    fresh = sign_in_anonymously(auth)["user"]["id"]

    run_sql(database_url, "UPDATE auth.users SET last_sign_in_at = now() - interval '40 days', "
                          "created_at = now() - interval '40 days' WHERE id = $1::uuid", stale)
    run_sql(database_url, "INSERT INTO storage.objects (bucket_id, name, owner, version) "
                          "VALUES ('avatars', $1, $2::uuid, 'v-stale')", f"{stale}/a.png", stale)
    shutil.copy(keys_dir / "keys.json", tmp_path / "keys.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | {
        "GATEHOUSE_DATABASE_URL": database_url, "GATEHOUSE_DATA_DIR": str(tmp_path)}
    bad = subprocess.run(gatehouse_command("users", "prune-anonymous", "--older-than", "30x"), capture_output=True,
                         text=True, env=env, timeout=60, check=False)
    assert bad.returncode == 2 and "30d, 12h, 90m or 3600s" in bad.stderr
    pruned = subprocess.run(gatehouse_command("users", "prune-anonymous", "--older-than", "30d"),
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert pruned.returncode == 0, pruned.stderr
    assert "not seen for 30d" in pruned.stdout
    ids = {str(r["id"]) for r in run_sql(database_url, "SELECT id FROM auth.users WHERE id = ANY($1::uuid[])",
                                         [stale, fresh])}
    objects = run_sql(database_url, "SELECT count(*) FROM storage.objects WHERE owner = $1::uuid", stale)[0][0]
    assert ids == {fresh} and objects == 0


def test_supabase_py_sign_in_anonymously(server: RunningServer) -> None:
    from supabase import create_client

    supabase = create_client(server.url, server.keys.publishable_key)
    try:
        response = supabase.auth.sign_in_anonymously({"options": {"data": {"plan": "trial"}}})
        assert response.user is not None and response.user.is_anonymous is True
        assert response.user.user_metadata == {"plan": "trial"}
        assert claims(response.session.access_token)["is_anonymous"] is True  # type: ignore[union-attr]
    finally:
        supabase.auth.close()
        supabase.auth.admin.close()
