"""``gatehouse init`` and ``gatehouse migrate new``: a project folder a user commits, whose example
migration a real server applies and whose policies hold."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatehouse.core.config import Settings, oauth_variables
from gatehouse.project import ProjectError, new_migration, next_number, slug
from tests.support import ConfirmedSession, RunningServer
from tests.test_cli import run

VARIABLE = re.compile(r"^#?\s*(GATEHOUSE_[A-Z0-9_]+)=(.*)$")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("project") / "my-app"
    made = run("init", str(folder))
    assert made.returncode == 0, made.stderr
    for name in ("migrations/0001_example.sql", ".env.example", ".gitignore"):
        assert f"  {name}" in made.stdout
    assert "gatehouse serve" in made.stdout and f"cd {folder}" in made.stdout
    return folder


def test_init_writes_the_three_files(project: Path) -> None:
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == [
        ".env.example", ".gitignore", "migrations", "migrations/0001_example.sql"]
    ignored = (project / ".gitignore").read_text().splitlines()
    for pattern in (".gatehouse/", ".env", "keys.json", "*.pem", "__pycache__/", "!.env.example"):
        assert pattern in ignored
    example = (project / "migrations" / "0001_example.sql").read_text()
    for statement in ("REFERENCES auth.users", "ENABLE ROW LEVEL SECURITY", "FOR SELECT", "FOR INSERT", "FOR UPDATE",
                      "FOR DELETE", "auth.uid()", "TO authenticated", "-- ALTER PUBLICATION supabase_realtime"):
        assert statement in example


def test_env_example_names_only_known_settings(project: Path) -> None:
    lines = (project / ".env.example").read_text().splitlines()
    variables = [(match[1], match[2], line.startswith("#")) for line in lines if (match := VARIABLE.match(line))]
    assert len(variables) > 20
    fields = {f"GATEHOUSE_{name.upper()}" for name in Settings.model_fields}
    for name, _, _ in variables:
        if name.startswith("GATEHOUSE_OAUTH_"):
            assert oauth_variables({name: "x"}, {}), name  # a provider setting (ConfigError otherwise)
        else:
            assert name in fields, f"{name} is not a setting"
    # only the migrations folder is set; a deployment uncomments the rest
    assert [(name, value) for name, value, commented in variables if not commented] == [
        ("GATEHOUSE_MIGRATIONS_DIR", "migrations")]


def test_init_refuses_to_overwrite(project: Path) -> None:
    (project / ".gitignore").write_text("mine\n")
    again = run("init", str(project))
    assert again.returncode == 1
    assert "migrations/0001_example.sql, .env.example, .gitignore already exist" in again.stderr
    assert "Traceback" not in again.stderr
    assert (project / ".gitignore").read_text() == "mine\n"  # nothing written
    forced = run("init", str(project), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "keys.json" in (project / ".gitignore").read_text()


def test_init_leaves_the_example_out_of_a_folder_with_migrations(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_orders.sql").write_text("SELECT 1;")
    made = run("init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "(no migrations/0001_example.sql: migrations/ already holds migrations)" in made.stdout
    assert "cd " not in made.stdout  # already there
    assert sorted(p.name for p in (tmp_path / "migrations").iterdir()) == ["0001_orders.sql"]
    assert (tmp_path / ".gitignore").is_file() and (tmp_path / ".env.example").is_file()


# -- migrate new -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("add_todos", "add_todos"), ("Add Todos!", "add_todos"), ("  rename--column to  title ", "rename_column_to_title"),
    ("v2 schema", "v2_schema"), ("été_2024", "t_2024"), ("x" * 80, "x" * 60),
])
def test_slug(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_numbering(tmp_path: Path) -> None:
    assert next_number(tmp_path / "missing") == 1
    assert new_migration(tmp_path, "first").name == "0001_first.sql"
    for name in ("0007_x.sql", "README.md", "notes.sql", "0009_draft.sql.bak", "x_0010.sql"):
        (tmp_path / name).write_text("")
    (tmp_path / "0020_a_folder.sql").mkdir()
    assert next_number(tmp_path) == 8
    made = new_migration(tmp_path, "Add due dates")
    assert made == tmp_path / "0008_add_due_dates.sql"
    assert made.read_text().startswith("-- 0008_add_due_dates: applied once")
    (tmp_path / "9999_last.sql").write_text("")
    assert new_migration(tmp_path, "more").name == "10000_more.sql"


def test_bad_names_and_taken_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("", "!!!", "---", "ééé"):
        with pytest.raises(ProjectError, match="no letters or digits"):
            new_migration(tmp_path, name)
    assert list(tmp_path.iterdir()) == []
    taken = tmp_path / "0003_b.sql"
    taken.write_text("someone else's")
    # another `migrate new` made the same name between the numbering and the write
    monkeypatch.setattr("gatehouse.project.next_number", lambda folder: 3)
    with pytest.raises(ProjectError, match="already exists"):
        new_migration(tmp_path, "b")
    assert taken.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["0003_b.sql"]  # no temporary file left behind


def test_migrate_new_from_the_command_line(project: Path, tmp_path: Path) -> None:
    work = tmp_path / "app"
    shutil.copytree(project, work)
    shutil.copy(work / ".env.example", work / ".env")  # GATEHOUSE_MIGRATIONS_DIR=migrations, read from .env
    made = run("migrate", "new", "Add due dates", cwd=work)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "created migrations/0002_add_due_dates.sql"
    elsewhere = run("migrate", "new", "first", "--dir", str(tmp_path / "other"), cwd=work)
    assert elsewhere.stdout.strip() == f"created {tmp_path / 'other' / '0001_first.sql'}"
    bad = run("migrate", "new", "???", cwd=work)
    assert bad.returncode == 1 and "no letters or digits" in bad.stderr and "Traceback" not in bad.stderr
    assert sorted(p.name for p in (work / "migrations").iterdir()) == ["0001_example.sql", "0002_add_due_dates.sql"]


# -- the example, applied by a real server -----------------------------------------------------------------------


def test_the_example_migration_applies_and_its_policies_hold(
    project: Path, server_factory: Callable[..., RunningServer], confirmed_session: ConfirmedSession
) -> None:
    server = server_factory(env={"GATEHOUSE_MIGRATIONS_DIR": str(project / "migrations")})
    assert "applying migration user/0001_example.sql" in server.log()
    (_, alice), (_, bob) = confirmed_session(server), confirmed_session(server)
    key = server.keys.publishable_key

    def as_user(session: dict[str, Any]) -> httpx.Client:
        return httpx.Client(base_url=f"{server.url}/rest/v1", timeout=10, headers={
            "apikey": key, "Authorization": f"Bearer {session['access_token']}", "Prefer": "return=representation"})

    with as_user(alice) as a, as_user(bob) as b:
        mine = a.post("/todos", json={"task": "write the report"})
        assert mine.status_code == 201, mine.text
        row = mine.json()[0]
        assert row["owner"] == alice["user"]["id"] and row["done"] is False
        assert b.post("/todos", json={"task": "buy milk"}).status_code == 201
        # each sees only their own
        assert [t["task"] for t in a.get("/todos").json()] == ["write the report"]
        assert [t["task"] for t in b.get("/todos").json()] == ["buy milk"]
        # nobody writes rows for someone else, or changes or deletes theirs
        forged = b.post("/todos", json={"task": "spam", "owner": alice["user"]["id"]})
        assert forged.status_code == 403, forged.text
        assert b.patch(f"/todos?id=eq.{row['id']}", json={"done": True}).json() == []
        assert b.delete(f"/todos?id=eq.{row['id']}").json() == []
        given_away = a.patch(f"/todos?id=eq.{row['id']}", json={"owner": bob["user"]["id"]})
        assert given_away.status_code == 403, given_away.text
        assert a.patch(f"/todos?id=eq.{row['id']}", json={"done": True}).json()[0]["done"] is True
        assert [t["done"] for t in a.get("/todos").json()] == [True]
        assert len(a.delete(f"/todos?id=eq.{row['id']}").json()) == 1
        assert a.get("/todos").json() == []
    # signed out: no grant at all
    anonymous = httpx.get(f"{server.url}/rest/v1/todos", headers={"apikey": key})
    assert anonymous.status_code == 401, anonymous.text
