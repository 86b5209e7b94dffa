"""Media types and header values as storage takes them in and serves them back.

An object's content type and cache control come from whoever uploaded it and go back out as
response headers. So they are checked on the way in (one valid media type, a cache directive of
printable ASCII) and again on the way out, because rows written before these checks, or straight
in SQL, may hold anything: a value that cannot be a header is replaced, never sent.

A browser renders some types as documents that run script (HTML, XML and everything built on it,
SVG, XSL, JavaScript). :func:`is_document` names them so that the serving path can send them as
attachments unless a bucket opts in; every object response also carries :data:`OBJECT_CSP`, a
sandbox that keeps script from running whatever the type says.
"""

from __future__ import annotations

import re
from typing import Any

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.errors import storage_error

__all__ = [
    "DEFAULT_CACHE_CONTROL",
    "DEFAULT_TYPE",
    "OBJECT_CSP",
    "body_type",
    "cache_control",
    "essence",
    "is_document",
    "safe_metadata",
]

#: Sent with every object response: no script, no plugin, no fetch, a unique opaque origin.
#: Images, audio and video still display; HTML and SVG documents show without running script.
OBJECT_CSP = "default-src 'none'; sandbox"
DEFAULT_TYPE = "application/octet-stream"
DEFAULT_CACHE_CONTROL = "no-cache"
MAX_TYPE_LENGTH = 255
MAX_CACHE_CONTROL_LENGTH = 512
_OWS = " \t"  # only spaces and tabs are trimmed: any other character is part of the value

# RFC 9110 §5.6.2 tokens and §8.3.1 media types: type "/" subtype *( OWS ";" OWS parameter ).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_PARAMETER = rf"{_TOKEN}=(?:{_TOKEN}|{_QUOTED})"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})(?:[ \t]*;[ \t]*(?:{_PARAMETER})?)*")
_CONTROL_OR_COMMA = re.compile(r"[^ -~]|,")
#: A cache directive list: printable ASCII only, so it can never break or smuggle a header.
_CACHE_CONTROL = re.compile(r"[ -~]+")

#: Types a browser opens as a document (or runs as script) when navigated to.
_DOCUMENT_TYPES = frozenset({
    "text/html", "application/xhtml+xml", "text/xml", "application/xml", "text/xsl", "text/xslt",
    "application/xslt+xml", "image/svg+xml", "text/javascript", "application/javascript",
    "application/x-javascript", "text/ecmascript", "application/ecmascript", "text/jscript",
    "text/livescript", "text/x-javascript", "text/x-ecmascript", "application/x-ecmascript",
    "text/vbscript", "text/vbs", "text/x-component", "application/hta",
    "application/x-shockwave-flash", "application/futuresplash", "application/vnd.adobe.flash.movie",
    "multipart/x-mixed-replace", "multipart/related", "message/rfc822", "application/x-mimearchive",
    "application/pdf", "text/x-pdf", "application/x-pdf",
    "application/java-archive", "application/x-java-applet", "application/x-silverlight-app",
})
#: Any subtype containing one of these is treated as a document too: cheap and errs safe.
_DOCUMENT_MARKS = ("html", "xml", "xsl", "svg", "script", "jscript")


def essence(value: str | None, *, what: str = "Content-Type") -> str | None:
    """The ``type/subtype`` of a declared media type, lower case; None when none was declared.

    Refuses anything that is not exactly one media type (a comma-joined list, control or
    non-ASCII characters, a missing subtype, a malformed parameter) with 400 ``InvalidMimeType``.
    """
    if value is None or not value.strip(_OWS):
        return None
    text = value.strip(_OWS)
    # No comma even inside quotes: browsers read a comma-joined header as a list and take a member.
    match = _MEDIA_TYPE.fullmatch(text) if len(text) <= MAX_TYPE_LENGTH and "," not in text else None
    if match is None:
        raise invalid_type(value, what)
    return f"{match.group(1)}/{match.group(2)}".lower()


def body_type(content_type: str | None) -> str | None:
    """The media type a raw upload's ``Content-Type`` declares for the object; None for a form.

    A form's own header is not checked as strictly: RFC 2046 lets a boundary hold characters
    that are not token characters, and that header is never stored or served.
    """
    if content_type is not None:
        media, _, params = content_type.partition(";")
        if media.strip(_OWS).lower() == "multipart/form-data" and not _CONTROL_OR_COMMA.search(params):
            return None
    return essence(content_type)


def invalid_type(value: str, what: str = "Content-Type") -> GatehouseError:
    shown = value[:80].encode("ascii", "backslashreplace").decode("ascii")
    return storage_error(
        "InvalidMimeType",
        f"{what} {shown!r} is not one valid media type; send a single type/subtype such as "
        "text/plain or image/png (parameters after ';' are allowed, commas and control characters are not)",
        400,
    )


def cache_control(value: str | None) -> str | None:
    """A cache directive for storing: ``3600`` becomes ``max-age=3600``; None when none was sent.

    Refuses control characters (CR and LF would end the header), non-ASCII text and overlong
    values with 400 ``InvalidRequest``.
    """
    if value is None or not value.strip(_OWS):
        return None
    text = value.strip(_OWS)
    if len(text) > MAX_CACHE_CONTROL_LENGTH or not _CACHE_CONTROL.fullmatch(text):
        shown = text[:80].encode("ascii", "backslashreplace").decode("ascii")
        raise storage_error(
            "InvalidRequest",
            f"cacheControl {shown!r} is not a valid Cache-Control value: use printable ASCII such as "
            f"'max-age=3600' or a number of seconds, at most {MAX_CACHE_CONTROL_LENGTH} characters",
            400,
        )
    return f"max-age={text}" if text.isdigit() else text


def is_document(mimetype: str | None) -> bool:
    """True if a browser may render the type as a document or run it as script.

    Case and parameters are ignored; anything whose subtype mentions HTML, XML, XSL, SVG or
    script counts, as do the types in ``_DOCUMENT_TYPES``.
    """
    if not mimetype:
        return False
    bare = mimetype.split(";", 1)[0].strip().lower()
    if bare in _DOCUMENT_TYPES:
        return True
    subtype = bare.partition("/")[2]
    return not subtype or any(mark in subtype for mark in _DOCUMENT_MARKS)


def _served_type(value: Any) -> str:
    if isinstance(value, str):
        try:
            bare = essence(value)
        except GatehouseError:
            return DEFAULT_TYPE
        if bare is not None:
            return bare
    return DEFAULT_TYPE


def _served_cache_control(value: Any) -> str:
    if isinstance(value, str):
        try:
            return cache_control(value) or DEFAULT_CACHE_CONTROL
        except GatehouseError:
            pass
    return DEFAULT_CACHE_CONTROL


def _header_safe(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_CACHE_CONTROL_LENGTH and bool(_CACHE_CONTROL.fullmatch(value))


def safe_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """An object's stored metadata with ``mimetype``, ``cacheControl`` and ``eTag`` fit to be headers.

    Values that fail the upload checks (stored before them, or written in SQL) are replaced by
    ``application/octet-stream`` and ``no-cache``, and a bad ``eTag`` is left out: the object is
    served safely rather than refused or crashed.
    """
    mimetype = _served_type(metadata.get("mimetype"))
    cache = _served_cache_control(metadata.get("cacheControl"))
    etag_ok = "eTag" not in metadata or _header_safe(metadata["eTag"])
    if metadata.get("mimetype") == mimetype and metadata.get("cacheControl") == cache and etag_ok:
        return metadata
    safe = {**metadata, "mimetype": mimetype, "cacheControl": cache}
    if not etag_ok:
        del safe["eTag"]
    return safe
