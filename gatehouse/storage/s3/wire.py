"""S3's XML: the documents the S3 routes answer with, and a bounded reader for the ones they take.

Answers are written as text (a handful of fixed shapes, every value escaped, characters XML 1.0
cannot carry dropped). Requests (DeleteObjects, CompleteMultipartUpload, CreateBucket) are read
by :func:`parse` with expat directly: a body over its byte limit is refused before parsing, and
any DTD (where entity expansion bombs and external entities live) is refused while parsing, as
are documents deeper or wider than any S3 request needs.
"""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from gatehouse.storage.s3.errors import s3_error, text

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n'
#: The most elements a request document may hold (DeleteObjects: 1000 keys, 3 elements each).
MAX_ELEMENTS = 12_000
MAX_DEPTH = 8


def key_text(value: str, url_encoded: bool) -> str:
    """An object key (or prefix) as listings give it: URL-encoded when the client asked
    ``encoding-type=url`` (botocore always does, and decodes it back)."""
    return text(quote(value, safe="/~") if url_encoded else value)


def key_leaf(name: str, value: str, url_encoded: bool) -> str:
    return f"<{name}>{key_text(value, url_encoded)}</{name}>"


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def element(name: str, *children: str) -> str:
    return f"<{name}>{''.join(children)}</{name}>"


def leaf(name: str, value: object) -> str:
    return f"<{name}>{text(value)}</{name}>"


def document(root: str, *children: str) -> bytes:
    return (HEADER + f'<{root} xmlns="{NAMESPACE}">{"".join(children)}</{root}>').encode()


@dataclass
class Node:
    """One element of a parsed request: its local name, text and children."""

    name: str
    text: str = ""
    children: list[Node] = field(default_factory=list)

    def all(self, name: str) -> list[Node]:
        return [child for child in self.children if child.name == name]

    def first(self, name: str) -> Node | None:
        found = self.all(name)
        return found[0] if found else None


class _Refused(Exception):
    pass


def parse(body: bytes, *, root: str, limit: int) -> Node:
    """The request document ``body``, whose root element must be ``root``; ``MalformedXML`` else."""
    if len(body) > limit:
        raise s3_error("MalformedXML", f"The XML body is larger than {limit} bytes", 400)
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    stack: list[Node] = []
    top: list[Node] = []
    count = 0

    def refuse_dtd(*_: object) -> None:
        raise _Refused("a DTD is not allowed")

    def start(name: str, _: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS or len(stack) >= MAX_DEPTH:
            raise _Refused("the document is too large or too deep")
        node = Node(name.rpartition(" ")[2])
        (stack[-1].children if stack else top).append(node)
        stack.append(node)

    def end(_: str) -> None:
        stack.pop()

    def data(chunk: str) -> None:
        if stack:
            stack[-1].text += chunk

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(body, True)
    except _Refused as exc:
        raise s3_error("MalformedXML", f"The XML you provided was not well-formed: {exc}", 400) from None
    except xml.parsers.expat.ExpatError as exc:
        raise s3_error("MalformedXML", f"The XML you provided was not well-formed: {exc}", 400) from None
    if len(top) != 1 or top[0].name != root:
        raise s3_error("MalformedXML", f"The XML document's root element must be {root}", 400)
    return top[0]
