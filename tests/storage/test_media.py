"""Media types and header values: what an upload may declare, what is served, what a browser renders."""

from __future__ import annotations

import pytest

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.media import DEFAULT_TYPE, body_type, cache_control, essence, is_document, safe_metadata


@pytest.mark.parametrize(
    ("declared", "stored"),
    [
        (None, None),
        ("", None),
        ("text/plain", "text/plain"),
        ("TEXT/HTML; Charset=UTF-8", "text/html"),
        ("text/plain;charset=UTF-8", "text/plain"),  # supabase-py's default
        ("image/png ; q=1", "image/png"),
        ('text/plain; name="a b"', "text/plain"),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("multipart/form-data; boundary=----x", "multipart/form-data"),
    ],
)
def test_one_valid_media_type_is_taken(declared: str | None, stored: str | None) -> None:
    assert essence(declared) == stored


@pytest.mark.parametrize(
    "declared",
    [
        "text/plain,text/html",  # a browser reads the list and takes a member
        "application/octet-stream,text/html",
        "text/plain, text/html",
        'text/plain; name="a,b"',  # no comma, even quoted
        "text/html\r\nX-Injected: 1",
        "text/plain\x00",
        "text/\x0bhtml",
        "text/é",
        "text",
        "text/",
        "/html",
        "text/html/x",
        "text/plain; charset",
        'text/plain; a="unclosed',
        "text/pl ain",
        "a/" + "b" * 300,
    ],
)
def test_anything_else_is_refused_with_invalid_mime_type(declared: str) -> None:
    with pytest.raises(GatehouseError) as refused:
        essence(declared)
    assert refused.value.code == "InvalidMimeType" and refused.value.status == 400
    assert "\r" not in refused.value.message and "\n" not in refused.value.message


@pytest.mark.parametrize(
    ("given", "stored"),
    [(None, None), ("", None), ("3600", "max-age=3600"), ("public, max-age=60", "public, max-age=60"),
     ("no-cache", "no-cache")],
)
def test_cache_control_is_taken(given: str | None, stored: str | None) -> None:
    assert cache_control(given) == stored


@pytest.mark.parametrize("given", ["max-age=1\r\nSet-Cookie: a=b", "max-age=1\n", "caché", "a\x00", "\u2028", "x" * 513])
def test_cache_control_that_cannot_be_a_header_is_refused(given: str) -> None:
    with pytest.raises(GatehouseError) as refused:
        cache_control(given)
    assert refused.value.code == "InvalidRequest" and refused.value.status == 400


@pytest.mark.parametrize(
    "mimetype",
    ["text/html", "TEXT/HTML", "text/html; charset=utf-8", "application/xhtml+xml", "text/xml", "application/xml",
     "text/xsl", "application/xslt+xml", "image/svg+xml", "Image/SVG+XML; x=1", "application/rss+xml",
     "application/mathml+xml", "text/javascript", "application/javascript", "application/ecmascript",
     "text/ecmascript", "application/x-javascript", "text/x-component", "multipart/x-mixed-replace",
     "message/rfc822", "application/pdf", "text/vnd.wap.wml+xml", "application/x-shockwave-flash", "text/vbscript"],
)
def test_types_a_browser_renders_as_documents(mimetype: str) -> None:
    assert is_document(mimetype)


@pytest.mark.parametrize(
    "mimetype",
    [None, "", "text/plain", "image/png", "image/jpeg", "video/mp4", "audio/mpeg", "application/json",
     "application/octet-stream", "text/csv", "font/woff2", "application/zip"],
)
def test_types_that_are_not_documents(mimetype: str | None) -> None:
    assert not is_document(mimetype)


@pytest.mark.parametrize(
    ("stored", "served"),
    [
        ({"mimetype": "text/plain,text/html", "cacheControl": "no-cache"},
         {"mimetype": DEFAULT_TYPE, "cacheControl": "no-cache"}),
        ({"mimetype": "image/png", "cacheControl": "max-age=1\r\nX: y"}, {"mimetype": "image/png", "cacheControl": "no-cache"}),
        ({"mimetype": "image/png", "cacheControl": "caché"}, {"mimetype": "image/png", "cacheControl": "no-cache"}),
        ({"mimetype": "text/html\r\n", "cacheControl": 3}, {"mimetype": DEFAULT_TYPE, "cacheControl": "no-cache"}),
        ({"mimetype": 42}, {"mimetype": DEFAULT_TYPE, "cacheControl": "no-cache"}),
        ({"mimetype": "image/png", "cacheControl": "no-cache", "eTag": '"a"\r\nX: y'},
         {"mimetype": "image/png", "cacheControl": "no-cache"}),
    ],
)
def test_stored_values_are_made_safe_on_the_way_out(stored: dict[str, object], served: dict[str, object]) -> None:
    assert safe_metadata({"size": 1, **stored}) == {"size": 1, **served}


def test_good_metadata_is_served_as_stored() -> None:
    metadata = {"mimetype": "image/png", "cacheControl": "max-age=60", "eTag": '"abc"', "size": 3}
    assert safe_metadata(metadata) is metadata


@pytest.mark.parametrize(
    ("content_type", "declared"),
    [
        ("multipart/form-data; boundary=----WebKitFormBoundaryx7Y", None),
        ("multipart/form-data; boundary==_Part_0_1.2:3?/()", None),  # RFC 2046 boundary characters
        ('Multipart/Form-Data; boundary="a b"', None),
        ("text/plain", "text/plain"),
        (None, None),
    ],
)
def test_a_form_header_needs_only_a_boundary(content_type: str | None, declared: str | None) -> None:
    assert body_type(content_type) == declared


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data,text/html", "multipart/form-data; boundary=a,text/html", "multipart/form-data; b=\r\nX: y",
     "text/html,multipart/form-data"],
)
def test_a_form_header_is_still_one_media_type(content_type: str) -> None:
    with pytest.raises(GatehouseError) as refused:
        body_type(content_type)
    assert refused.value.code == "InvalidMimeType"
