"""The dump splitter: where statements end, what a COPY block holds, and what counts as truncated."""

from __future__ import annotations

import pytest

from gatehouse.ops.importer.dump import Copy, DumpError, Meta, Statement, split, tokens


def statements(text: str) -> list[str]:
    return [item.sql for item in split(text) if isinstance(item, Statement)]


@pytest.mark.parametrize(("text", "expected"), [
    ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
    ("COMMENT ON TABLE t IS 'a; b';", ["COMMENT ON TABLE t IS 'a; b'"]),
    ("COMMENT ON TABLE t IS 'it''s; x';", ["COMMENT ON TABLE t IS 'it''s; x'"]),
    ("SELECT E'\\'; still';", ["SELECT E'\\'; still'"]),
    ("SELECT 'C:\\'; SELECT 2;", ["SELECT 'C:\\'", "SELECT 2"]),  # standard strings: a backslash is a backslash
    ('CREATE TABLE "a;""b" (x int);', ['CREATE TABLE "a;""b" (x int)']),
    ("CREATE FUNCTION f() AS $$ begin; end $$;", ["CREATE FUNCTION f() AS $$ begin; end $$"]),
    ("CREATE FUNCTION f() AS $body$ a; $$ b; $x$ $body$;", ["CREATE FUNCTION f() AS $body$ a; $$ b; $x$ $body$"]),
    ("SELECT a$b$c; SELECT 2;", ["SELECT a$b$c", "SELECT 2"]),  # $ inside an identifier quotes nothing
    ("-- a; comment\nSELECT 1 -- and; another\n;", ["SELECT 1 -- and; another\n"]),
    ("/* one /* two; */ still; */ SELECT 1;", ["SELECT 1"]),
    ("SELECT 1 /* ; */ + 1;", ["SELECT 1 /* ; */ + 1"]),
])
def test_statements_end_at_the_semicolon_that_ends_them(text: str, expected: list[str]) -> None:
    assert statements(text) == expected


def test_copy_blocks_keep_their_rows_as_they_are() -> None:
    text = ('SET x = 1;\nCOPY "public"."notes" ("id", "body") FROM stdin;\n1\ta; b\\n\\\\\n2\t\\N\n\\.\n\n'
            'COPY "auth"."users" ("id") FROM stdin;\n\\.\nSELECT 1;\n')
    items = list(split(text))
    assert [type(item) for item in items] == [Statement, Copy, Copy, Statement]
    notes, users = items[1], items[2]
    assert isinstance(notes, Copy) and isinstance(users, Copy)
    assert (notes.schema, notes.table, notes.columns, notes.line) == ("public", "notes", ("id", "body"), 2)
    assert notes.data == "1\ta; b\\n\\\\\n2\t\\N\n" and notes.rows == 2
    assert users.data == "" and users.rows == 0
    assert items[3].line == 9


def test_psql_meta_commands_are_items_of_their_own() -> None:
    items = list(split("\\restrict abc123\n\nSET a = 1;\n\\unrestrict abc123\n"))
    assert [type(item) for item in items] == [Meta, Statement, Meta]
    assert items[0].head == "\\restrict"


@pytest.mark.parametrize(("text", "message"), [
    ("CREATE TABLE t (", "never ends"),
    ("SELECT 'abc;", "string literal"),
    ("CREATE FUNCTION f() AS $$ begin; ", "never ends"),
    ('COPY "public"."t" ("id") FROM stdin;\n1\n2\n', "no closing"),
    ('COPY "public"."t" ("id") FROM stdin;', "no rows"),
    ("/* never closed ", "comment"),
    ('COPY "public"."t" FROM stdin;\n\\.\n', "lists no columns"),
])
def test_truncated_input_is_an_error(text: str, message: str) -> None:
    with pytest.raises(DumpError, match=message):
        list(split(text))


def test_tokens_name_quoted_identifiers_words_and_bodies() -> None:
    found = tokens('CREATE TRIGGER "t" AFTER INSERT ON "auth"."users" EXECUTE FUNCTION public.f() AS $x$ ; $x$')
    assert [(t.kind, t.value) for t in found][:9] == [
        ("word", "create"), ("word", "trigger"), ("quoted", "t"), ("word", "after"), ("word", "insert"),
        ("word", "on"), ("quoted", "auth"), ("punct", "."), ("quoted", "users"),
    ]
    assert found[-1] == found[-1].__class__("body", "$x$ ; $x$")
