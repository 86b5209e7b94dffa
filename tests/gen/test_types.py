"""``gatehouse gen types``: the generated text, then the real compilers' verdict on it.

The module's database gets ``schema.sql`` (every column kind the tutorial and common apps use).
The TypeScript is checked by ``tsc --noEmit`` (TypeScript pinned in tests/clients/js) with the
pinned supabase-js: ``uses_types.ts`` must compile and pin what supabase-js infers;
``wrong_types.ts`` must fail on exactly its marked lines. The Python module is imported and
checked by ``mypy --strict`` the same way, with ``uses_types.py.txt`` and ``wrong_types.py.txt``
(kept as .txt: they import the module the test generates, so they only check beside it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import pytest

from gatehouse.gen.cli import generate, schemas
from tests.clients.test_js_client import JS_DIR, js_client, node  # noqa: F401  (fixtures)
from tests.support import gatehouse_command

HERE = Path(__file__).parent
SCHEMAS = ["public", "extra"]
CHECK_TIMEOUT = 300


@pytest.fixture(scope="module")
async def catalog_url(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute((HERE / "schema.sql").read_text())
    finally:
        await conn.close()
    return database_url


@pytest.fixture(scope="module")
async def typescript_text(catalog_url: str) -> str:
    return await generate(catalog_url, SCHEMAS, "typescript")


@pytest.fixture(scope="module")
async def python_text(catalog_url: str) -> str:
    return await generate(catalog_url, SCHEMAS, "python")


def block(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def contains(generated: str, expected: str, indent: int) -> bool:
    """Whether ``expected`` (dedented) occurs in ``generated`` at ``indent`` levels of two spaces."""
    return textwrap.indent(block(expected), "  " * indent) in generated


def marked_lines(path: Path) -> set[int]:
    """The lines with an ``expect-error:`` comment."""
    return {number for number, line in enumerate(path.read_text().splitlines(), 1) if "expect-error:" in line}


def test_schema_option_takes_repeats_and_commas() -> None:
    assert schemas(None) == ["public"]
    assert schemas(["public, extra", "storage", "extra"]) == ["public", "extra", "storage"]


def test_typescript_tables(typescript_text: str) -> None:
    text = typescript_text
    assert 'export type Json = string | number | boolean | null | { [key: string]: Json | undefined } | Json[]' in text
    assert contains(text, '__InternalSupabase: {\n  PostgrestVersion: "13"\n}', 1)
    # an always-identity key is never written; a foreign key that is also unique is one-to-one
    assert contains(text, """
        authors: {
          Row: {
            born: string | null
            id: number
            name: string
            profile_id: string | null
          }
          Insert: {
            born?: string | null
            id?: never
            name: string
            profile_id?: string | null
          }
          Update: {
            born?: string | null
            id?: never
            name?: string
            profile_id?: string | null
          }
          Relationships: [
            {
              foreignKeyName: "authors_profile_id_fkey"
              columns: ["profile_id"]
              isOneToOne: true
              referencedRelation: "profiles"
              referencedColumns: ["id"]
            },
          ]
        }""", 3)
    posts_row = """
        Row: {
          author_id: number
          body: string | null
          created_at: string
          "Display Name": string | null
          home: Database["public"]["CompositeTypes"]["address"] | null
          id: string
          metadata: Json | null
          mood: Database["public"]["Enums"]["mood"]
          moods: Database["public"]["Enums"]["mood"][] | null
          published: boolean
          rating: number | null
          score: number | null
          serial: number
          tags: string[]
          title: string
          title_length: number | null
          views: number
        }"""
    assert contains(text, posts_row, 4)
    for insert_line in ("author_id: number", "title: string", "id?: string", "serial?: number", "tags?: string[]",
                        "metadata?: Json | null", 'mood?: Database["public"]["Enums"]["mood"]',
                        "title_length?: never", "created_at?: string"):
        assert f"\n          {insert_line}\n" in text.split("      posts: {")[1].split("Update:")[0], insert_line
    assert contains(text, """
        Relationships: [
          {
            foreignKeyName: "posts_author_id_fkey"
            columns: ["author_id"]
            isOneToOne: false
            referencedRelation: "authors"
            referencedColumns: ["id"]
          },
        ]""", 4)
    # the tutorial's table: the key to auth.users (another schema) is not listed, as the Supabase CLI does
    assert contains(text, """
        profiles: {
          Row: {
            avatar_url: string | null
            full_name: string | null
            id: string
            updated_at: string | null
            username: string | null
            website: string | null
          }
          Insert: {
            avatar_url?: string | null
            full_name?: string | null
            id: string""", 3)
    # a second schema: public's enum is referred to, not copied; its empty groups are never
    assert contains(text, 'mood: Database["public"]["Enums"]["mood"] | null', 5)
    assert contains(text, "Views: {\n  [_ in never]: never\n}", 2)


def test_typescript_views_functions_enums(typescript_text: str) -> None:
    text = typescript_text
    # an updatable view takes writes, except to its computed column; a materialized view takes none
    assert contains(text, "Update: {\n  author_id?: number | null\n  created_at?: string | null\n"
                          "  id?: string | null\n  shout?: never\n  title?: string | null\n}", 4)
    assert contains(text, "post_counts: {\n  Row: {\n    author_id: number | null\n    n: number | null\n  }\n"
                          "  Relationships: []\n}", 3)
    assert contains(text, "add_numbers: {\n  Args: { a: number; b?: number }\n  Returns: number\n}", 3)
    assert contains(text, """
        author_stats: {
          Args: { min_posts?: number }
          Returns: {
            author_id: number
            last_post: string
            posts: number
          }[]
        }""", 3)
    assert contains(text, 'SetofOptions: {\n  from: "*"\n  to: "posts"\n  isOneToOne: false\n  isSetofReturn: true\n}', 4)
    assert contains(text, 'posts_by_mood: {\n  Args: { wanted: Database["public"]["Enums"]["mood"] }\n  Returns: {', 3)
    assert contains(text, 'echo_json: {\n  Args: { "": Json }\n  Returns: Json\n}', 3)
    assert contains(text, "touch_all: {\n  Args: never\n  Returns: undefined\n}", 3)
    assert contains(text, 'Enums: {\n  mood: "happy" | "sad" | "meh"\n}', 2)
    assert contains(text, "address: {\n  street: string | null\n  city: string | null\n  tags: string[] | null\n}", 3)
    assert contains(text, 'public: {\n  Enums: {\n    mood: ["happy", "sad", "meh"],\n  },\n},', 1)
    for helper in ("Tables", "TablesInsert", "TablesUpdate", "Enums", "CompositeTypes"):
        assert f"\nexport type {helper}<\n" in text
    assert 'type DefaultSchema = Schemas["public"]' in text


def _tsc_errors(output: str) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for file, line in re.findall(r"^([\w.]+\.ts)\((\d+),\d+\): error TS\d+", output, flags=re.MULTILINE):
        found.setdefault(file, set()).add(int(line))
    return found


def test_typescript_compiles_with_supabase_js(
    typescript_text: str, node: list[str], js_client: Path, tmp_path: Path  # noqa: F811
) -> None:
    """tsc --noEmit: the program that uses the types compiles, each deliberate mistake is an error."""
    (tmp_path / "database.types.ts").write_text(typescript_text)
    for name in ("uses_types.ts", "wrong_types.ts"):
        shutil.copy(HERE / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(js_client / "node_modules", target_is_directory=True)
    (tmp_path / "tsconfig.json").write_text("""{
      "compilerOptions": {
        "target": "ES2022", "module": "ESNext", "moduleResolution": "Bundler", "lib": ["ES2022", "DOM"],
        "strict": true, "noEmit": true, "skipLibCheck": true, "types": []
      },
      "files": ["database.types.ts", "uses_types.ts", "wrong_types.ts"]
    }""")
    tsc = js_client / "node_modules" / "typescript" / "bin" / "tsc"
    result = subprocess.run([*node, str(tsc), "-p", "tsconfig.json", "--pretty", "false"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False)
    errors = _tsc_errors(result.stdout)
    assert result.returncode != 0, "tsc accepted wrong_types.ts"
    assert set(errors) == {"wrong_types.ts"}, result.stdout
    assert errors["wrong_types.ts"] == marked_lines(HERE / "wrong_types.ts"), result.stdout


def test_python_module(python_text: str) -> None:
    text = python_text
    assert 'Json: TypeAlias = Union[str, int, float, bool, None, dict[str, "Json"], list["Json"]]' in text
    assert 'PublicMood: TypeAlias = Literal["happy", "sad", "meh"]' in text
    assert block('''
        class PublicAuthorsInsert(TypedDict):
            "What an insert into public.authors takes."
            born: NotRequired[Optional[str]]
            name: str
            profile_id: NotRequired[Optional[str]]
        ''') in text
    # a column name that is no identifier: the functional form, evaluated at import
    assert '    "Display Name": NotRequired[Optional[str]],\n' in text
    assert '    "home": Optional["PublicAddress"],\n' in text
    assert '    "title_length": Optional[int],\n' in text.split("PublicPostsRow = ")[1].split("})")[0]
    assert "title_length" not in text.split("PublicPostsInsert = ")[1].split("})")[0]
    assert "class PublicPostCountsInsert" not in text
    assert "    mood: NotRequired[Optional[PublicMood]]\n" in text.split("class ExtraNotesInsert")[1]


def _mypy_errors(output: str) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for file, line in re.findall(r"^([\w.]+\.py):(\d+): error:", output, flags=re.MULTILINE):
        found.setdefault(file, set()).add(int(line))
    return found


def test_python_imports_and_type_checks(python_text: str, tmp_path: Path) -> None:
    """The module imports (with the right required keys at run time) and mypy --strict agrees with it."""
    (tmp_path / "database_types.py").write_text(python_text)
    for name in ("uses_types.py", "wrong_types.py"):
        shutil.copy(HERE / f"{name}.txt", tmp_path / name)
    probe = (
        "import database_types as t, uses_types\n"
        "assert t.PublicPostsInsert.__required_keys__ == {'author_id', 'title'}, t.PublicPostsInsert.__required_keys__\n"
        "assert t.PublicAuthorsInsert.__required_keys__ == {'name'}\n"
        "assert t.PublicPostsUpdate.__required_keys__ == frozenset()\n"
        "assert 'Display Name' in t.PublicPostsRow.__required_keys__\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    imported = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=CHECK_TIMEOUT, check=False)
    assert imported.returncode == 0, imported.stderr
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / ".mypy"),
         "database_types.py", "uses_types.py", "wrong_types.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False,
    )
    errors = _mypy_errors(result.stdout)
    assert set(errors) == {"wrong_types.py"}, result.stdout + result.stderr
    assert errors["wrong_types.py"] == marked_lines(HERE / "wrong_types.py.txt"), result.stdout


def test_cli_writes_stdout_and_files(catalog_url: str, keys_dir: Path, tmp_path: Path, typescript_text: str) -> None:
    shutil.copy(keys_dir / "keys.json", tmp_path / "keys.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env |= {"GATEHOUSE_DATABASE_URL": catalog_url, "GATEHOUSE_DATA_DIR": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(gatehouse_command("gen", "types", *args), capture_output=True, text=True, env=env,
                              timeout=120, check=False)

    printed = run("--schema", "public", "--schema", "extra")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == typescript_text  # nothing but the types on stdout: `> database.types.ts` works

    out = tmp_path / "types" / "db.py"
    out.parent.mkdir()
    out.write_text("old contents")
    written = run("--lang", "python", "--schema", "public,extra", "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert out.read_text().startswith('"""Types of the schemas "public", "extra", generated by')
    assert sorted(p.name for p in out.parent.iterdir()) == ["db.py"]  # no temporary file left behind

    missing = run("--schema", "public,nowhere", "--out", str(out))
    assert missing.returncode == 1 and "no schema named nowhere" in missing.stderr
    assert out.read_text().startswith('"""Types of the schemas "public", "extra"')  # untouched
    only_extra = run("--schema", "extra")
    # without public in the file, public's enum is spelled out
    assert 'mood: "happy" | "sad" | "meh" | null' in only_extra.stdout
    assert 'type DefaultSchema = Schemas["extra"]' in only_extra.stdout
