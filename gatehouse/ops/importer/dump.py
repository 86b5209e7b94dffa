"""A plain-text ``pg_dump`` file, cut into what psql would run: statements, COPY blocks, meta-commands.

The cut respects everything that may hold a ``;`` without ending a statement: string literals
(``'...'`` with ``''``, and ``E'...'`` with backslash escapes), quoted identifiers (``"..."``),
dollar-quoted bodies (``$$...$$``, ``$tag$...$tag$``) and comments (``--`` and nested ``/* */``).
A ``COPY ... FROM stdin;`` is followed by its rows up to a line holding only ``\\.``. A line
starting with a backslash where a statement would start is a psql meta-command (pg_dump writes
``\\restrict`` and ``\\unrestrict`` since 15.14/16.10/17.6).

A file that ends inside a statement, a string or a COPY block is truncated: ``DumpError``.
Nothing is executed here; ``tokens`` gives the classifier (``plan.py``) words to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Copy", "DumpError", "Meta", "Statement", "Token", "split", "tokens"]


class DumpError(Exception):
    """The text is not a complete plain-text pg_dump file (the message says where)."""


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # where it starts, from 1

    @property
    def head(self) -> str:
        """The first words, for messages."""
        flat = " ".join(self.sql.split())
        return flat if len(flat) <= 90 else flat[:87] + "..."


@dataclass(frozen=True)
class Copy:
    """``COPY schema.table (columns) FROM stdin;`` and its rows in COPY's text format."""

    sql: str
    line: int
    schema: str
    table: str
    columns: tuple[str, ...]
    data: str  # the rows, each ending in "\n", without the "\." line

    @property
    def rows(self) -> int:
        return self.data.count("\n")

    @property
    def head(self) -> str:
        return f"COPY {self.schema}.{self.table}"


@dataclass(frozen=True)
class Meta:
    """A psql meta-command line (``\\restrict KEY``)."""

    text: str
    line: int

    @property
    def head(self) -> str:
        return self.text.split()[0] if self.text.split() else self.text


Item = Statement | Copy | Meta

_SPECIAL = re.compile(r"""[;'"$/\-]""")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]")
_SPACE_OR_COMMENT = re.compile(r"(?:\s+|--[^\n]*(?:\n|$))+")
_COPY_STDIN = re.compile(r"^\s*COPY\b.*\bFROM\s+stdin\b", re.IGNORECASE | re.DOTALL)


def split(text: str) -> Iterator[Item]:
    """The items of a dump in order; ``DumpError`` on truncated or malformed input."""
    pos, line, size = 0, 1, len(text)
    while True:
        gap = _skip_gap(text, pos)
        line += text.count("\n", pos, gap)
        pos = gap
        if pos >= size:
            return
        if text.startswith("\\", pos):
            end = text.find("\n", pos)
            end = size if end < 0 else end
            yield Meta(text[pos:end].strip(), line)
            line += text.count("\n", pos, end)
            pos = end
            continue
        end = _statement_end(text, pos, line)
        sql, start, start_line = text[pos:end], pos, line
        line += text.count("\n", pos, end + 1)
        pos = end + 1
        if _COPY_STDIN.match(sql):
            block, after = _copy_block(text, sql, end + 1, start_line)
            yield block
            line = start_line + text.count("\n", start, after)
            pos = after
        else:
            yield Statement(sql, start_line)


def _skip_gap(text: str, pos: int) -> int:
    """Past whitespace and comments (``--`` and nested ``/* */``) between statements."""
    while True:
        match = _SPACE_OR_COMMENT.match(text, pos)
        if match:
            pos = match.end()
        if text.startswith("/*", pos):
            pos = _block_comment_end(text, pos)
            continue
        return pos


def _block_comment_end(text: str, pos: int) -> int:
    depth, i = 0, pos
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise DumpError("the dump ends inside a /* comment */: it is truncated")


def _statement_end(text: str, pos: int, line: int) -> int:
    """The index of the ``;`` ending the statement starting at ``pos``."""
    i = pos
    while True:
        match = _SPECIAL.search(text, i)
        if match is None:
            break
        i = match.start()
        char = text[i]
        if char == ";":
            return i
        if char == "'":
            escaped = i > pos and text[i - 1] in "eE" and (i - 1 == pos or not _IDENT_CHAR.match(text[i - 1 - 1]))
            i = _string_end(text, i, escaped, line)
        elif char == '"':
            end = text.find('"', i + 1)
            while end >= 0 and text.startswith('""', end):
                end = text.find('"', end + 2)
            if end < 0:
                break
            i = end + 1
        elif char == "$":
            tag = _DOLLAR_TAG.match(text, i)
            if tag and (i == pos or not _IDENT_CHAR.match(text[i - 1])):
                end = text.find(tag.group(0), tag.end())
                if end < 0:
                    break
                i = end + len(tag.group(0))
            else:
                i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            if end < 0:
                break
            i = end + 1
        elif text.startswith("/*", i):
            i = _block_comment_end(text, i)
        else:
            i += 1
    raise DumpError(f"the statement starting on line {line} never ends (no ';'): the dump is truncated")


def _string_end(text: str, i: int, escaped: bool, line: int) -> int:
    j = i + 1
    while j < len(text):
        char = text[j]
        if escaped and char == "\\":
            j += 2
            continue
        if char == "'":
            if text.startswith("''", j):
                j += 2
                continue
            return j + 1
        j += 1
    raise DumpError(f"a string literal in the statement starting on line {line} never ends: the dump is truncated")


def _copy_block(text: str, sql: str, pos: int, line: int) -> tuple[Copy, int]:
    """The COPY block whose statement ends just before ``pos``, and where the text after it starts."""
    newline = text.find("\n", pos)
    if newline < 0:
        raise DumpError(f"the COPY on line {line} has no rows and no closing \\. line: the dump is truncated")
    if text[pos:newline].strip():
        raise DumpError(f"the COPY on line {line} is followed by more text on its line: not a pg_dump file")
    start = newline + 1
    if text.startswith("\\.\n", start) or text[start:] == "\\.":
        end = start
    else:
        found = text.find("\n\\.\n", start - 1)
        if found < 0 and text.endswith("\n\\."):
            found = len(text) - 3
        if found < 0:
            raise DumpError(f"the COPY on line {line} has no closing \\. line: the dump is truncated")
        end = found + 1
    words = tokens(sql)
    schema, table, columns = _copy_target(words, line)
    # "WITH (FORMAT binary)" or CSV would need another reader; pg_dump writes the text format.
    rest = [t.value for t in words if t.kind == "word"]
    if "binary" in rest or "csv" in rest:
        raise DumpError(f"the COPY on line {line} is not in the text format pg_dump writes")
    return Copy(sql, line, schema, table, columns, text[start:end]), min(end + 3, len(text))


def _copy_target(words: list[Token], line: int) -> tuple[str, str, tuple[str, ...]]:
    names = [t for t in words[1:] if t.kind in ("word", "quoted", "punct")]
    if len(names) >= 3 and names[1].value == "." and names[0].kind != "punct" and names[2].kind != "punct":
        schema, table, rest = names[0].value, names[2].value, names[3:]
    elif names and names[0].kind != "punct":
        schema, table, rest = "public", names[0].value, names[1:]
    else:
        raise DumpError(f"the COPY on line {line} names no table")
    columns: list[str] = []
    if rest and rest[0].value == "(":
        for token in rest[1:]:
            if token.value == ")":
                break
            if token.kind != "punct":
                columns.append(token.value)
    if not columns:
        raise DumpError(f"the COPY on line {line} lists no columns: not a pg_dump file")
    return schema, table, tuple(columns)


@dataclass(frozen=True)
class Token:
    """``word`` (a bare word or identifier, lower-cased), ``quoted`` (a "quoted identifier"),
    ``string``, ``body`` (dollar-quoted), ``number`` or ``punct``."""

    kind: str
    value: str


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|--[^\n]*)
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<string>[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')
  | (?P<body>\$\$.*?\$\$|\$(?P<tag>[A-Za-z_]\w*)\$.*?\$(?P=tag)\$)
  | (?P<word>[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def tokens(sql: str) -> list[Token]:
    """The statement's tokens, without spaces and comments (block comments come out as punctuation,
    which is harmless for classifying: pg_dump writes none inside statements)."""
    out: list[Token] = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind == "tag":
            kind = "body"
        if kind == "space" or kind is None:
            continue
        value = match.group(kind)
        if kind == "word":
            value = value.lower()
        elif kind == "quoted":
            value = value[1:-1].replace('""', '"')
        out.append(Token(kind, value))
    return out
