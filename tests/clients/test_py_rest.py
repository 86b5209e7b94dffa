"""The tutorial's data calls through the unmodified supabase-py client, as a confirmed user."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from postgrest.exceptions import APIError
from supabase import Client, create_client

from tests.clients.conftest import Clients
from tests.support import RunningServer


@pytest.fixture
def signed_in(clients: Clients) -> Callable[[], tuple[Client, str]]:
    def make() -> tuple[Client, str]:
        client, uid = clients()
        assert uid is not None
        return client, uid

    return make


def test_tutorial_profile_calls(signed_in: Callable[[], tuple[Client, str]]) -> None:
    supabase, uid = signed_in()
    profile = (
        supabase.from_("profiles").select("full_name, username, website, avatar_url").eq("id", uid).single().execute()
    )
    assert profile.data == {"full_name": None, "username": None, "website": None, "avatar_url": None}

    username = f"user_{uuid.uuid4().hex[:8]}"
    updates = {"id": uid, "full_name": "Ada Lovelace", "username": username, "website": "https://ada.example",
               "updated_at": "2026-11-27T12:00:00+00:00"}
    upserted = supabase.from_("profiles").upsert(updates).execute()
    assert upserted.data[0]["username"] == username
    again = supabase.from_("profiles").select("username, website").eq("id", uid).single().execute()
    assert again.data == {"username": username, "website": "https://ada.example"}
    maybe = supabase.from_("profiles").select("id").eq("id", str(uuid.uuid4())).maybe_single().execute()
    assert maybe is None or maybe.data is None


def test_upserting_another_users_profile_is_refused(signed_in: Callable[[], tuple[Client, str]]) -> None:
    alice, _ = signed_in()
    _, bob_id = signed_in()
    with pytest.raises(APIError) as refused:
        alice.from_("profiles").upsert({"id": bob_id, "full_name": "hijacked"}).execute()
    assert refused.value.code == "42501"


def test_anon_cannot_update(live: RunningServer, signed_in: Callable[[], tuple[Client, str]]) -> None:
    _, uid = signed_in()
    anon = create_client(live.url, live.keys.publishable_key)
    try:
        with pytest.raises(APIError) as refused:
            anon.from_("profiles").update({"full_name": "anon"}).eq("id", uid).execute()
        assert refused.value.code == "42501"
    finally:
        anon.postgrest.session.close()
        anon.auth.close()


def test_short_and_duplicate_usernames(signed_in: Callable[[], tuple[Client, str]]) -> None:
    alice, alice_id = signed_in()
    bob, bob_id = signed_in()
    with pytest.raises(APIError) as short:
        alice.from_("profiles").upsert({"id": alice_id, "username": "ab"}).execute()
    assert short.value.code == "23514" and "username_length" in short.value.message
    taken = f"taken_{uuid.uuid4().hex[:6]}"
    alice.from_("profiles").upsert({"id": alice_id, "username": taken}).execute()
    with pytest.raises(APIError) as duplicate:
        bob.from_("profiles").upsert({"id": bob_id, "username": taken}).execute()
    assert duplicate.value.code == "23505"


def test_strip_nulls_leaves_out_null_values(signed_in: Callable[[], tuple[Client, str]]) -> None:
    """``.strip_nulls()`` sends ``Accept: application/vnd.pgrst.array+json;nulls=stripped`` (or the
    object form with ``.single()``): keys whose value is null are left out, as PostgREST does."""
    supabase, uid = signed_in()
    supabase.from_("profiles").upsert({"id": uid, "full_name": "Ada"}).execute()
    rows = supabase.from_("profiles").select("id, full_name, website").eq("id", uid).strip_nulls().execute()
    assert rows.data == [{"id": uid, "full_name": "Ada"}]
    one = (supabase.from_("profiles").select("id, full_name, website, username").eq("id", uid)
           .strip_nulls().single().execute())
    assert one.data == {"id": uid, "full_name": "Ada"}
    kept = supabase.from_("profiles").select("id, website").eq("id", uid).execute()
    assert kept.data == [{"id": uid, "website": None}]
