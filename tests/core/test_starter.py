"""GATEHOUSE_STARTER_SCHEMA=none: the tutorial's own SQL, run as its reader would, applies cleanly.

The SQL below is written the tutorial's way (its profiles table and check, three policies, the
sign-up trigger and function, the avatars bucket inserted into ``storage.buckets``, storage
policies on ``storage.foldername`` and ``auth.uid()``), plus the grants Gatehouse needs because
it grants nothing by default. It runs through ``gatehouse psql``; then the tutorial's calls work.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from gatehouse.core.config import load_settings
from gatehouse.core.db import prepare
from gatehouse.core.keys import KeySet
from gatehouse.core.migrate import MigrationError
from tests.auth.helpers import new_email
from tests.support import ConfirmedSession, RunningServer, gatehouse_command, start_server

TUTORIAL_SQL = """
create table profiles (
  id uuid references auth.users not null primary key,
  updated_at timestamp with time zone,
  username text unique,
  full_name text,
  avatar_url text,
  website text,
  constraint username_length check (char_length(username) >= 3)
);
alter table profiles enable row level security;
create policy "Public profiles are viewable by everyone." on profiles for select using (true);
create policy "Users can insert their own profile." on profiles for insert with check ((select auth.uid()) = id);
create policy "Users can update own profile." on profiles for update using ((select auth.uid()) = id);

create function public.handle_new_user()
returns trigger
set search_path = ''
as $$
begin
  insert into public.profiles (id, full_name, avatar_url)
  values (new.id, new.raw_user_meta_data->>'full_name', new.raw_user_meta_data->>'avatar_url');
  return new;
end;
$$ language plpgsql security definer;
create trigger on_auth_user_created
  after insert on auth.users
  for each row execute procedure public.handle_new_user();

insert into storage.buckets (id, name) values ('avatars', 'avatars');
create policy "Avatar images are publicly accessible." on storage.objects
  for select using (bucket_id = 'avatars');
create policy "Users upload into their own folder." on storage.objects
  for insert to authenticated
  with check (bucket_id = 'avatars' and (storage.foldername(name))[1] = (select auth.uid())::text);

-- Gatehouse grants nothing by default (Supabase grants every new table to every role):
grant select on profiles to anon;
grant select, insert, update on profiles to authenticated;
"""


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory, keys: KeySet, keys_dir: Path,
         empty_database_url: str) -> Iterator[RunningServer]:
    server = start_server(
        tmp_path_factory.mktemp("starter-none"), keys, database_url=empty_database_url,
        keys_file=keys_dir / "keys.json",
        env={"GATEHOUSE_STARTER_SCHEMA": "none", "GATEHOUSE_RATE_LIMITS_ENABLED": "false"},
    )
    yield server
    server.stop()


def psql(server: RunningServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env["GATEHOUSE_DATABASE_URL"] = server.env["GATEHOUSE_DATABASE_URL"]
    return subprocess.run(
        gatehouse_command("psql", "--data-dir", str(server.data_dir), "--", "-X", "-v", "ON_ERROR_STOP=1", *args),
        input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False,
    )


def test_the_tutorials_sql_applies_cleanly_and_its_calls_work(
    bare: RunningServer, confirmed_session: ConfirmedSession
) -> None:
    before = psql(bare, "-tAc", "SELECT to_regclass('public.profiles') IS NULL, count(*) FROM storage.buckets")
    assert before.stdout.split() == ["t|0"], before.stderr  # no starter: no profiles, no avatars bucket

    applied = psql(bare, "-f", "-", stdin=TUTORIAL_SQL)
    assert applied.returncode == 0 and "ERROR" not in applied.stderr, applied.stderr

    _, session = confirmed_session(bare)
    token, uid = str(session["access_token"]), str(session["user"]["id"])
    headers = {"apikey": bare.keys.publishable_key, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=bare.url, headers=headers, timeout=15) as http:
        # The API sees the new table without a manual reload (the DDL event trigger's NOTIFY).
        deadline = time.monotonic() + 10
        while (profile := http.get("/rest/v1/profiles", params={"id": f"eq.{uid}", "select": "id,username"})
               ).status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert profile.status_code == 200 and profile.json() == [{"id": uid, "username": None}]
        upsert = http.post("/rest/v1/profiles", json={"id": uid, "username": "tutorial_reader"},
                           headers={"Prefer": "resolution=merge-duplicates,return=representation"})
        assert upsert.status_code == 201, upsert.text
        mine = http.post(f"/storage/v1/object/avatars/{uid}/me.txt", content=b"hi",
                         headers={"Content-Type": "text/plain"})
        assert mine.status_code == 200, mine.text
        theirs = http.post("/storage/v1/object/avatars/someone-else/me.txt", content=b"hi",
                           headers={"Content-Type": "text/plain"})
        assert theirs.status_code in (400, 403), theirs.text


async def test_an_existing_starter_with_data_is_never_dropped(database_url: str, keys: KeySet, keys_dir: Path) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO auth.users (id, email) VALUES (gen_random_uuid(), $1)", new_email())
    finally:
        await conn.close()
    settings = load_settings(data_dir=keys_dir, database_url=database_url, starter_schema="none")
    with pytest.raises(MigrationError, match="public.profiles already holds rows"):
        await prepare(database_url, keys, settings)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM public.profiles") == 1  # rolled back, nothing lost
    finally:
        await conn.close()
