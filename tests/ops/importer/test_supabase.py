"""`gatehouse import supabase`, end to end: a Supabase project in a real PostgreSQL (Debian's 15),
dumped with pg_dump the way Supabase's backup guide does it, imported by the real command into a
fresh Gatehouse database, then used through the real HTTP API.

The source database mirrors Supabase's auth and storage schemas (``supabase_project.sql``), its
roles and platform schemas, and an app like the user-management tutorial's; users get bcrypt
hashes made by the ``bcrypt`` package with GoTrue's ``$2a$`` prefix.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import bcrypt
import httpx
import pyotp
import pytest

from gatehouse.core.embedded import EmbeddedPostgres
from gatehouse.core.keys import KeySet
from tests.conftest import create_database, drop_database
from tests.deploy.components import PG_BIN, Postgres, SeaweedS3, require_path
from tests.support import RunningServer, fetch_rows, gatehouse_command, run_sql, start_server

FIXTURE = Path(__file__).with_name("supabase_project.sql")
#: The schemas `supabase db dump` leaves out of the schema dump (supabase/cli utils.InternalSchemas),
#: and those it leaves out of the data dump (the platform's own, whose rows are not the project's).
INTERNAL = ("auth|extensions|pgbouncer|realtime|_realtime|storage|_analytics|supabase_functions|"
            "supabase_migrations|cron|graphql|graphql_public|net|pgsodium|pgsodium_masks|pgtle|repack|tiger|"
            "tiger_data|topology|vault|information_schema|pg_*")
DATA_EXCLUDED = "extensions|pgbouncer|realtime|_realtime|information_schema|pg_*"
ENV = {"GATEHOUSE_STARTER_SCHEMA": "none", "GATEHOUSE_RATE_LIMITS_ENABLED": "false"}
NOTE = "tab\there; semicolon, 'quote', back\\slash\nand a second line"


def gotrue_hash(password: str) -> str:
    """A hash as GoTrue (Go's bcrypt) writes it: ``$2a$10$…``."""
    return "$2a$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()[4:]


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password: str


@dataclass(frozen=True)
class Project:
    schema: Path
    storage: Path
    data: Path
    single: Path
    files: Path
    ada: User
    bob: User
    anonymous_id: str
    totp_secret: str
    note: bytes
    avatar: bytes


async def _fill(url: str, ada: User, bob: User, anonymous_id: str, totp_secret: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(FIXTURE.read_text())
        for user, extra in ((ada, {"full_name": "Ada Lovelace"}), (bob, {"full_name": "Bob"})):
            await conn.execute(
                "INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, "
                "raw_app_meta_data, raw_user_meta_data, created_at, updated_at, last_sign_in_at, phone, "
                "phone_confirmed_at) VALUES ('00000000-0000-0000-0000-000000000000', $1, 'authenticated', "
                "'authenticated', $2, $3, now() - interval '30 days', $4, $5, now() - interval '40 days', "
                "now() - interval '1 day', now() - interval '2 days', $6, $7)",
                uuid.UUID(user.id), user.email, gotrue_hash(user.password),
                json.dumps({"provider": "email", "providers": ["email", "github"] if user is ada else ["email"]}),
                json.dumps(extra), "15550001111" if user is bob else None,
                None,
            )
            await conn.execute(
                "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at) "
                "VALUES ($1, $2, $3, 'email', now(), now())",
                user.id, uuid.UUID(user.id), json.dumps({"sub": user.id, "email": user.email, "email_verified": True}),
            )
        await conn.execute(
            "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at) "
            "VALUES ('4242', $1, $2, 'github', now())",
            uuid.UUID(ada.id), json.dumps({"sub": "4242", "email": ada.email, "user_name": "ada"}),
        )
        await conn.execute(
            "INSERT INTO auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at, "
            "secret) VALUES ($1, $2, 'phone app', 'totp', 'verified', now(), now(), $3)",
            uuid.uuid4(), uuid.UUID(bob.id), totp_secret,
        )
        await conn.execute(
            "INSERT INTO auth.users (id, aud, role, is_anonymous, created_at, updated_at, encrypted_password, "
            "raw_app_meta_data, raw_user_meta_data, banned_until) VALUES ($1, 'authenticated', 'authenticated', "
            "true, now(), now(), '', '{}', '{}', '2999-01-01')", uuid.UUID(anonymous_id),
        )
        await conn.execute("UPDATE public.profiles SET username = 'ada', plan = 'pro' WHERE id = $1", uuid.UUID(ada.id))
        await conn.execute("UPDATE public.profiles SET username = 'bob' WHERE id = $1", uuid.UUID(bob.id))
        await conn.execute("INSERT INTO public.notes (owner, body) VALUES ($1, $2), ($3, 'bob''s')",
                           uuid.UUID(ada.id), NOTE, uuid.UUID(bob.id))
        objects = [
            ("docs", f"{ada.id}/notes.txt", ada.id, "text/plain"),
            ("avatars", "ada.png", ada.id, "image/png"),
            ("docs", "lost.txt", bob.id, "text/plain"),          # a row whose file is not in --files
            ("docs", "../outside.txt", bob.id, "text/plain"),   # a name that would leave the bucket's folder
            ("docs", "link.txt", bob.id, "text/plain"),          # a symbolic link in --files
        ]
        for bucket, name, owner, mimetype in objects:
            await conn.execute(
                "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, version) "
                "VALUES ($1, $2, $3, $4, $5, $6)", bucket, name, uuid.UUID(owner), owner,
                json.dumps({"eTag": '"0"', "size": 1, "mimetype": mimetype, "cacheControl": "max-age=3600"}),
                str(uuid.uuid4()),
            )
    finally:
        await conn.close()


def pg_dump(url: str, out: Path, *flags: str) -> Path:
    with out.open("wb") as handle:
        if "--data-only" in flags:
            handle.write(b"SET session_replication_role = replica;\n\n")  # as `supabase db dump --data-only` writes
        handle.flush()
        subprocess.run([str(PG_BIN / "pg_dump"), "--dbname", url, *flags], stdout=handle, check=True)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    require_path(PG_BIN / "pg_dump", "Debian's postgresql-15 plays the Supabase project's database")
    root = tmp_path_factory.mktemp("supabase")
    source = Postgres(root / "pg").start()
    try:
        ada = User(str(uuid.uuid4()), "ada@example.com", "the analytical engine 1843")
        bob = User(str(uuid.uuid4()), "bob@example.com", "bobs own passphrase!")
        anonymous_id, totp_secret = str(uuid.uuid4()), pyotp.random_base32()
        url = source.url()
        asyncio.run(_fill(url, ada, bob, anonymous_id, totp_secret))
        # Supabase's guide: `supabase db dump -f schema.sql` and `... -f data.sql --use-copy --data-only`.
        schema = pg_dump(url, root / "schema.sql", "--schema-only", "--quote-all-identifier",
                         "--exclude-schema", INTERNAL, "--extension", "*", "--no-comments")
        # The storage schema's policies: `supabase db dump -f storage.sql --schema storage`.
        storage = pg_dump(url, root / "storage.sql", "--schema-only", "--quote-all-identifier", "--schema", "storage",
                          "--no-comments")
        data = pg_dump(url, root / "data.sql", "--data-only", "--quote-all-identifier", "--exclude-schema",
                       DATA_EXCLUDED, "--exclude-table", "auth.schema_migrations", "--exclude-table",
                       "storage.migrations", "--schema", "*")
        # The other way: one plain pg_dump of auth, public and storage (rows as INSERTs, as older CLIs wrote them).
        single = pg_dump(url, root / "project.sql", "--clean", "--if-exists", "--quote-all-identifiers", "--column-inserts",
                         "--schema", "auth", "--schema", "public", "--schema", "storage")
    finally:
        source.stop()
    files = root / "buckets"
    note, avatar = b"Ada's private notes\n", b"\x89PNG\r\n\x1a\n not really a png"
    (files / "docs" / ada.id).mkdir(parents=True)
    (files / "docs" / ada.id / "notes.txt").write_bytes(note)
    (files / "docs" / "orphan.txt").write_bytes(b"no row points here")
    (files / "avatars").mkdir()
    (files / "avatars" / "ada.png").write_bytes(avatar)
    (root / "outside.txt").write_bytes(b"outside the bucket folder")
    (files / "outside.txt").write_bytes(b"outside the docs bucket folder")
    os.symlink(root / "outside.txt", files / "docs" / "link.txt")
    yield Project(schema, storage, data, single, files, ada, bob, anonymous_id, totp_secret, note, avatar)


@dataclass
class Target:
    url: str
    data_dir: Path
    keys: KeySet
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
        env |= ENV | self.env | {"GATEHOUSE_DATABASE_URL": self.url}
        return subprocess.run(gatehouse_command(*map(str, args), "--data-dir", str(self.data_dir)),
                              env=env, capture_output=True, text=True, timeout=300, check=False)

    def state(self) -> dict[str, Any]:
        """Everything an import may change, to compare before and after."""
        counts = fetch_rows(self.url, """
            SELECT (SELECT count(*) FROM auth.users) AS users, (SELECT count(*) FROM auth.identities) AS identities,
                   (SELECT count(*) FROM storage.buckets) AS buckets, (SELECT count(*) FROM storage.objects) AS objects,
                   (SELECT count(*) FROM pg_policies) AS policies,
                   (SELECT array_agg(relname::text ORDER BY relname) FROM pg_class c
                      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'public') AS public,
                   (SELECT count(*) FROM pg_namespace) AS schemas""")[0]
        stored = sorted(str(p.relative_to(self.data_dir)) for p in (self.data_dir / "storage").rglob("*") if p.is_file())
        return {**dict(counts), "files": stored}


async def _target(pg_cluster: EmbeddedPostgres, tmp: Path, keys_dir: Path, keys: KeySet, hint: str) -> Target:
    url = await create_database(pg_cluster, "template1", hint)
    tmp.mkdir(parents=True)
    (tmp / "keys.json").write_bytes((keys_dir / "keys.json").read_bytes())
    target = Target(url, tmp, keys)
    migrated = await asyncio.to_thread(target.command, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    return target


@pytest.fixture(scope="module")
async def target(pg_cluster: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory, keys_dir: Path,
                 keys: KeySet) -> AsyncIterator[Target]:
    made = await _target(pg_cluster, tmp_path_factory.mktemp("import") / "data", keys_dir, keys, "import_target")
    yield made
    await drop_database(pg_cluster, made.url)


@pytest.fixture(scope="module")
async def single_target(pg_cluster: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory, keys_dir: Path,
                        keys: KeySet) -> AsyncIterator[Target]:
    made = await _target(pg_cluster, tmp_path_factory.mktemp("import1") / "data", keys_dir, keys, "import_single")
    yield made
    await drop_database(pg_cluster, made.url)


@pytest.fixture(scope="module")
async def s3_target(pg_cluster: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory, keys_dir: Path,
                    keys: KeySet, seaweedfs: SeaweedS3) -> AsyncIterator[Target]:
    made = await _target(pg_cluster, tmp_path_factory.mktemp("import2") / "data", keys_dir, keys, "import_s3")
    bucket = f"import-{uuid.uuid4().hex[:8]}"
    admin = seaweedfs.client()
    admin.create_bucket(Bucket=bucket)
    admin.close()
    made.env = seaweedfs.env(bucket)
    yield made
    await drop_database(pg_cluster, made.url)


def import_args(project: Project, *extra: str | Path) -> list[str | Path]:
    return ["import", "supabase", "--schema", project.schema, "--schema", project.storage, "--data", project.data,
            "--files", project.files, *extra]


@dataclass(frozen=True)
class Outcome:
    before: dict[str, Any]
    after: dict[str, Any]
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def dry_run(project: Project, target: Target) -> Outcome:
    before = target.state()
    result = target.command(*import_args(project, "--dry-run"))
    return Outcome(before, target.state(), result)


@pytest.fixture(scope="module")
def imported(project: Project, target: Target, dry_run: Outcome) -> Outcome:
    before = target.state()
    result = target.command(*import_args(project))
    assert result.returncode == 0, result.stderr
    return Outcome(before, target.state(), result)


@pytest.fixture(scope="module")
def server(target: Target, imported: Outcome) -> Iterator[RunningServer]:
    running = start_server(target.data_dir, target.keys, database_url=target.url, env=ENV)
    yield running
    running.stop()


def test_dry_run_reports_everything_and_changes_nothing(dry_run: Outcome) -> None:
    assert dry_run.result.returncode == 0, dry_run.result.stderr
    out = dry_run.result.stdout
    assert out.startswith("Dry run: nothing was changed. Supabase import would import: 3 users, 3 identities, "
                          "1 MFA factors, 2 buckets, 2 objects (")
    assert "  public.profiles: 3\n" in out and "  public.notes: 2\n" in out
    for skipped in ("ALTER … OWNER TO", "ALTER DEFAULT PRIVILEGES",
                    "grant to a role Gatehouse does not have", "psql meta-command", "session setting",
                    "1 row(s) of vault.secrets"):
        assert skipped in out, skipped
    assert "storage.buckets: avif_autodetection, type" in out and "storage.objects: level" in out
    assert "Objects left out (no file in --files): 1: docs/lost.txt" in out
    assert "docs/../outside.txt (Invalid key" in out and "docs/link.txt (the path leads outside" in out
    assert ("Files with no object row (not imported): 2: docs/orphan.txt, outside.txt (not in a bucket's folder)"
            in out)
    assert dry_run.after == dry_run.before


def test_import_brings_users_identities_and_rows(project: Project, target: Target, imported: Outcome) -> None:
    assert imported.result.stdout.startswith(
        "Supabase import imported: 3 users, 3 identities, 1 MFA factors, 2 buckets, 2 objects")
    users = {str(r["id"]): r for r in fetch_rows(target.url, "SELECT * FROM auth.users")}
    assert set(users) == {project.ada.id, project.bob.id, project.anonymous_id}
    ada, bob, anonymous = users[project.ada.id], users[project.bob.id], users[project.anonymous_id]
    assert ada["email"] == project.ada.email and ada["encrypted_password"].startswith("$2a$10$")
    assert ada["email_confirmed_at"] is not None and ada["confirmed_at"] == ada["email_confirmed_at"]
    assert json.loads(ada["raw_user_meta_data"]) == {"full_name": "Ada Lovelace"}
    assert json.loads(ada["raw_app_meta_data"])["providers"] == ["email", "github"]
    assert bob["phone"] == "15550001111" and ada["instance_id"] == uuid.UUID(int=0)
    assert anonymous["is_anonymous"] is True and anonymous["banned_until"].year == 2999
    identities = fetch_rows(target.url, "SELECT provider, provider_id, user_id::text, email FROM auth.identities "
                                        "ORDER BY provider, provider_id")
    assert [(r["provider"], r["user_id"]) for r in identities] == sorted(
        [("email", project.ada.id), ("email", project.bob.id), ("github", project.ada.id)])
    assert {r["email"] for r in identities} == {project.ada.email, project.bob.email}
    profiles = fetch_rows(target.url, "SELECT id::text, username, plan::text FROM public.profiles ORDER BY username")
    assert [(r["username"], r["plan"]) for r in profiles] == [("ada", "pro"), ("bob", "free"), (None, "free")]
    notes = fetch_rows(target.url, "SELECT body FROM public.notes WHERE owner = $1", uuid.UUID(project.ada.id))
    assert notes[0]["body"] == NOTE
    # The identity's next value continues after the imported rows (setval came along).
    run_sql(target.url, "INSERT INTO public.notes (owner) VALUES ($1) RETURNING id", uuid.UUID(project.bob.id))
    policies = {(r["tablename"], r["policyname"]) for r in fetch_rows(target.url, "SELECT * FROM pg_policies")}
    assert ("profiles", "Users see their own profile.") in policies and ("notes", "Owners manage their notes") in policies
    buckets = {r["id"]: r for r in fetch_rows(target.url, "SELECT * FROM storage.buckets")}
    assert buckets["avatars"]["public"] is True and buckets["avatars"]["file_size_limit"] == 1048576
    assert buckets["avatars"]["allowed_mime_types"] == ["image/png", "image/jpeg"] and buckets["docs"]["public"] is False
    assert imported.after["users"] == imported.before["users"] + 3


def test_imported_user_signs_in_with_the_old_password_and_is_rehashed(
    project: Project, target: Target, server: RunningServer
) -> None:
    token = sign_in(server, project.ada)
    assert token
    stored = fetch_rows(target.url, "SELECT encrypted_password FROM auth.users WHERE id = $1", uuid.UUID(project.ada.id))
    assert stored[0]["encrypted_password"].startswith("$argon2id$")
    assert sign_in(server, project.ada)  # and the new hash takes the same password
    wrong = httpx.post(f"{server.url}/auth/v1/token?grant_type=password", headers=apikey(server),
                       json={"email": project.bob.email, "password": "not bob's password"})
    assert wrong.status_code == 400


def test_an_imported_totp_factor_still_takes_the_authenticator_apps_codes(
    project: Project, target: Target, server: RunningServer
) -> None:
    stored = fetch_rows(target.url, "SELECT id::text, secret FROM auth.mfa_factors")
    assert len(stored) == 1 and stored[0]["secret"].startswith("v1:")  # sealed with Gatehouse's key
    token = sign_in(server, project.bob)
    factors = httpx.get(f"{server.url}/auth/v1/user", headers=apikey(server, token)).json()["factors"]
    assert [(f["id"], f["factor_type"], f["status"]) for f in factors] == [(stored[0]["id"], "totp", "verified")]
    factor = stored[0]["id"]
    challenge = httpx.post(f"{server.url}/auth/v1/factors/{factor}/challenge", headers=apikey(server, token), json={})
    assert challenge.status_code == 200, challenge.text
    verified = httpx.post(f"{server.url}/auth/v1/factors/{factor}/verify", headers=apikey(server, token),
                          json={"challenge_id": challenge.json()["id"], "code": pyotp.TOTP(project.totp_secret).now()})
    assert verified.status_code == 200, verified.text
    claims = json.loads(base64.urlsafe_b64decode(verified.json()["access_token"].split(".")[1] + "=="))
    assert claims["aal"] == "aal2"


def test_rls_and_objects_work_for_imported_users(project: Project, server: RunningServer) -> None:
    ada, bob = sign_in(server, project.ada), sign_in(server, project.bob)
    for user, token in ((project.ada, ada), (project.bob, bob)):
        rows = httpx.get(f"{server.url}/rest/v1/profiles?select=id,username", headers=apikey(server, token)).json()
        assert rows == [{"id": user.id, "username": user.email.split("@")[0]}]
    assert httpx.get(f"{server.url}/rest/v1/profiles", headers=apikey(server)).json() == []
    name = f"docs/{project.ada.id}/notes.txt"
    own = httpx.get(f"{server.url}/storage/v1/object/authenticated/{name}", headers=apikey(server, ada))
    assert own.status_code == 200 and own.content == project.note
    other = httpx.get(f"{server.url}/storage/v1/object/authenticated/{name}", headers=apikey(server, bob))
    assert other.status_code in (400, 404)
    public = httpx.get(f"{server.url}/storage/v1/object/public/avatars/ada.png")
    assert public.status_code == 200 and public.content == project.avatar
    listed = httpx.post(f"{server.url}/storage/v1/object/list/docs", headers=apikey(server, ada),
                        json={"prefix": project.ada.id}).json()
    assert [item["name"] for item in listed] == ["notes.txt"]
    assert listed[0]["metadata"]["size"] == len(project.note)


def test_a_second_run_is_refused_and_changes_nothing(project: Project, target: Target, imported: Outcome) -> None:
    before = target.state()
    again = target.command(*import_args(project))
    assert again.returncode == 1
    assert "already has" in again.stderr and project.ada.email in again.stderr
    assert target.state() == before


def test_a_truncated_dump_is_refused(project: Project, target: Target, imported: Outcome, tmp_path: Path) -> None:
    text = project.data.read_text()
    cut = tmp_path / "data.sql"
    cut.write_text(text[: text.index('COPY "public"."notes"') + 120])
    before = target.state()
    result = target.command("import", "supabase", "--schema", project.schema, "--data", cut)
    assert result.returncode == 1 and "truncated" in result.stderr, result.stderr
    assert target.state() == before


def test_an_unknown_password_hash_is_refused(project: Project, target: Target, imported: Outcome,
                                             tmp_path: Path) -> None:
    changed = tmp_path / "data.sql"
    # md5-crypt, as an older system may have left: GoTrue never wrote it, and Gatehouse cannot verify it.
    changed.write_text(re.sub(r"\$2a\$10\$[./A-Za-z0-9]{53}", "$1$abcdefgh$0123456789abcdefghijkl",
                              project.data.read_text()))
    before = target.state()
    result = target.command("import", "supabase", "--data", changed, "--dry-run")
    assert result.returncode == 1 and "cannot verify" in result.stderr and project.bob.id in result.stderr
    assert target.state() == before


def test_not_a_dump_is_refused(target: Target, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("Dear diary; today I moved away from Supabase.\n")
    result = target.command("import", "supabase", junk)
    assert result.returncode == 1 and "not a pg_dump" in result.stderr, result.stderr


def test_one_file_dump_refuses_an_email_gatehouse_has_then_imports(project: Project, single_target: Target) -> None:
    run_sql(single_target.url, "INSERT INTO auth.users (email, aud, role) VALUES ($1, 'authenticated', "
                               "'authenticated') RETURNING id", project.bob.email.upper())
    before = single_target.state()
    refused = single_target.command("import", "supabase", project.single, "--dry-run")
    assert refused.returncode == 1 and project.bob.email in refused.stderr, refused.stderr
    assert single_target.state() == before
    run_sql(single_target.url, "DELETE FROM auth.users")
    result = single_target.command("import", "supabase", project.single)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Supabase import imported: 3 users, 3 identities, 1 MFA factors, 2 buckets, "
                                    "0 objects")
    assert "  public.notes: 2\n" in result.stdout
    assert "Objects left out (no --files folder given): 5" in result.stdout
    assert "object in Supabase's auth schema" in result.stdout and "DROP from --clean" in result.stdout
    # The one-file dump carries the app's trigger on auth.users and the app's storage policies.
    policies = {r["policyname"] for r in fetch_rows(single_target.url, "SELECT policyname FROM pg_policies "
                                                                       "WHERE tablename = 'objects'")}
    assert {"Avatars are public", "Owners read their docs"} <= policies
    new = fetch_rows(single_target.url, "INSERT INTO auth.users (email, raw_user_meta_data) VALUES "
                                        "('new@example.com', '{\"full_name\": \"New\"}') RETURNING id")
    profile = fetch_rows(single_target.url, "SELECT full_name FROM public.profiles WHERE id = $1", new[0]["id"])
    assert profile[0]["full_name"] == "New"


def apikey(server: RunningServer, token: str | None = None) -> dict[str, str]:
    headers = {"apikey": server.keys.publishable_key}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def sign_in(server: RunningServer, user: User) -> str:
    response = httpx.post(f"{server.url}/auth/v1/token?grant_type=password", headers=apikey(server),
                          json={"email": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_bytes_written_before_a_failure_are_removed(target: Target, imported: Outcome, tmp_path: Path) -> None:
    """The bytes of the first objects are in the backend when the last row fails (its bucket does not
    exist): the transaction rolls back and the bytes go too, so no file is left that no row points at."""
    dump = tmp_path / "data.sql"
    dump.write_text(
        'COPY "storage"."buckets" ("id", "name", "public") FROM stdin;\nfresh\tfresh\tf\n\\.\n\n'
        'COPY "storage"."objects" ("id", "bucket_id", "name", "metadata") FROM stdin;\n'
        f'{uuid.uuid4()}\tfresh\ta.txt\t{{"mimetype": "text/plain"}}\n'
        f'{uuid.uuid4()}\tghost\tb.txt\t\\N\n\\.\n'
    )
    for bucket, name in (("fresh", "a.txt"), ("ghost", "b.txt")):
        (tmp_path / "files" / bucket).mkdir(parents=True)
        (tmp_path / "files" / bucket / name).write_bytes(b"bytes of " + name.encode())
    before = target.state()
    result = target.command("import", "supabase", "--data", dump, "--files", tmp_path / "files")
    assert result.returncode == 1 and "objects_bucket_id_fkey" in result.stderr, result.stderr
    assert target.state() == before


def test_with_the_s3_backend_the_bytes_go_to_s3(project: Project, s3_target: Target, seaweedfs: SeaweedS3,
                                                 tmp_path: Path) -> None:
    admin = seaweedfs.client()
    bucket = s3_target.env["GATEHOUSE_S3_BUCKET"]

    def stored() -> dict[str, bytes]:
        listed = admin.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {item["Key"]: admin.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listed}

    try:
        failing = tmp_path / "data.sql"
        failing.write_text(
            'COPY "storage"."objects" ("id", "bucket_id", "name") FROM stdin;\n'
            f'{uuid.uuid4()}\tghost\tb.txt\n\\.\n'
        )
        (tmp_path / "files" / "ghost").mkdir(parents=True)
        (tmp_path / "files" / "ghost" / "b.txt").write_bytes(b"never kept")
        refused = s3_target.command("import", "supabase", "--data", failing, "--files", tmp_path / "files")
        assert refused.returncode == 1 and stored() == {}
        result = s3_target.command(*import_args(project))
        assert result.returncode == 0, result.stderr
        rows = fetch_rows(s3_target.url, "SELECT bucket_id || '/' || version AS key, name FROM storage.objects")
        by_name = {row["name"]: row["key"] for row in rows}
        assert stored() == {by_name[f"{project.ada.id}/notes.txt"]: project.note, by_name["ada.png"]: project.avatar}
    finally:
        admin.close()
