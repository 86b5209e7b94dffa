"""What a file really is, from its first bytes, and whether a bucket takes it.

Uploads declare a content type that the server later serves back verbatim, so a declared
``image/png`` whose bytes are HTML or SVG would let anyone host script on our origin. The
service therefore checks image uploads against :func:`sniff_mime` (:func:`mime_matches`).

The signatures are the published magic numbers (PNG spec §5.2, JFIF/JPEG SOI, GIF87a/89a,
RIFF/WebP, ISO-BMFF ``ftyp`` brands for AVIF/HEIF, BMP/DIB, TIFF, ICO, ``%PDF-``, ZIP local and
end headers, JPEG XL), plus a small text sniff for SVG. No dependency, no I/O.

SVG is an image to a browser but also a document that runs script when served inline. It is
recognised here so that a declared ``image/svg+xml`` can be checked, but :func:`is_raster_image`
is False for it: the service must never treat it as a safe image (serve it as an attachment or
from another origin, and never feed it to the image renderer).
"""

from __future__ import annotations

import re

__all__ = [
    "HEAD_BYTES",
    "RASTER_IMAGE_TYPES",
    "canonical_mime",
    "is_raster_image",
    "mime_allowed",
    "mime_matches",
    "sniff_mime",
]

#: How many leading bytes :func:`sniff_mime` wants. Binary signatures fit in the first 64; the
#: rest is for SVG, whose ``<svg`` may follow an XML prolog, a DOCTYPE and licence comments.
HEAD_BYTES = 4096

#: Image types whose bytes are only pixels: safe to serve inline and to hand to the renderer.
RASTER_IMAGE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/heic", "image/heif",
    "image/bmp", "image/tiff", "image/x-icon", "image/jxl",
})

#: Other names clients and operating systems use for the same types.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "image/vnd.microsoft.icon": "image/x-icon",
    "image/ico": "image/x-icon",
    "image/x-ico": "image/x-icon",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heif",
    "image/avif-sequence": "image/avif",
    "image/tif": "image/tiff",
    "image/x-tiff": "image/tiff",
    "application/x-pdf": "application/pdf",
    "application/x-zip-compressed": "application/zip",
}

#: ISO-BMFF brands (ISO/IEC 23008-12 and the AV1 image format spec).
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2"}

#: The header sizes a BMP's DIB header can have (BITMAPCOREHEADER ... BITMAPV5HEADER).
_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

_SVG_OPEN = re.compile(rb"<svg[\s>/:]", re.IGNORECASE)


def sniff_mime(head: bytes) -> str | None:
    """The type of a file from its first :data:`HEAD_BYTES` bytes, or None if unrecognised."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _sniff_bmff(head)
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "image/jxl"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image/tiff"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _DIB_SIZES:
        return "image/bmp"
    if _is_ico(head):
        return "image/x-icon"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "application/zip"
    if _is_svg(head):
        return "image/svg+xml"
    return None


def _sniff_bmff(head: bytes) -> str | None:
    """AVIF and HEIF share the ISO-BMFF ``ftyp`` box: the brands say which one it is."""
    size = int.from_bytes(head[:4], "big")
    if size < 16 or size % 4:
        return None
    major = head[8:12]
    compatible = {head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    # The major brand wins; then the compatible ones, where AVIF/HEIC brands beat the generic
    # HEIF ones an AVIF or HEIC also lists (``mif1``, ``miaf``).
    for brands in ({major}, compatible):
        if brands & _AVIF_BRANDS:
            return "image/avif"
        if brands & _HEIC_BRANDS:
            return "image/heic"
    if ({major} | compatible) & _HEIF_BRANDS:
        return "image/heif"
    return None  # some other ISO-BMFF file: MP4, QuickTime, 3GP, ...


def _is_ico(head: bytes) -> bool:
    """ICONDIR: reserved 0, type 1, a non-zero count, and a first entry with its reserved byte 0."""
    if len(head) < 22 or head[:4] != b"\x00\x00\x01\x00":
        return False
    count = int.from_bytes(head[4:6], "little")
    return 0 < count <= 256 and head[9] == 0


def _is_svg(head: bytes) -> bool:
    """``<svg`` as the first element: after a BOM, whitespace, ``<?...?>``, comments and a DOCTYPE."""
    text = head.removeprefix(b"\xef\xbb\xbf")
    pos = 0
    while True:
        while pos < len(text) and text[pos] in b" \t\r\n\f":
            pos += 1
        if text.startswith(b"<?", pos):
            end = text.find(b"?>", pos + 2)
            pos = -1 if end < 0 else end + 2
        elif text.startswith(b"<!--", pos):
            end = text.find(b"-->", pos + 4)
            pos = -1 if end < 0 else end + 3
        elif text[pos:pos + 9].upper() == b"<!DOCTYPE":
            pos = _skip_doctype(text, pos + 9)
        else:
            return bool(_SVG_OPEN.match(text, pos))
        if pos < 0:
            return False


def _skip_doctype(text: bytes, pos: int) -> int:
    """The position after a DOCTYPE's closing ``>``, allowing an internal subset in brackets."""
    depth = 0
    for i in range(pos, len(text)):
        if text[i] == ord("["):
            depth += 1
        elif text[i] == ord("]"):
            depth -= 1
        elif text[i] == ord(">") and depth <= 0:
            return i + 1
    return -1


def canonical_mime(mime: str) -> str:
    """``Image/JPG; charset=x`` -> ``image/jpeg``: lower case, no parameters, aliases resolved."""
    bare = mime.split(";", 1)[0].strip().lower()
    return _ALIASES.get(bare, bare)


def is_raster_image(mime: str | None) -> bool:
    """True for pixel formats; False for SVG (a script-capable document) and everything else."""
    return mime is not None and canonical_mime(mime) in RASTER_IMAGE_TYPES


def mime_matches(declared: str, sniffed: str | None) -> bool:
    """Whether bytes sniffed as ``sniffed`` may be stored under the ``declared`` content type.

    Only ``image/*`` declarations are checked, because those are the ones a browser renders
    inline from our origin: the bytes must then be recognised as that very image type (aliases
    and parameters aside; HEIC and HEIF count as one). An image type we cannot recognise fails,
    so an unusual format must be uploaded as ``application/octet-stream``. Other declared types
    pass whatever the bytes are.
    """
    want = canonical_mime(declared)
    if not want.startswith("image/"):
        return True
    if sniffed is None:
        return False
    got = canonical_mime(sniffed)
    return _family(want) == _family(got)


def _family(mime: str) -> str:
    return "image/heic" if mime == "image/heif" else mime


def mime_allowed(mime: str, allowed: list[str] | None) -> bool:
    """Supabase's bucket ``allowed_mime_types`` check: exact types or ``type/*`` wildcards.

    None or an empty list allows anything. Unlike Supabase (a case-sensitive split on ``/``),
    comparison ignores case and parameters, so supabase-py's ``text/plain;charset=UTF-8`` passes
    an allow-list of ``text/plain``; ``*/*`` and ``*`` allow anything. Aliases are *not* resolved:
    an allow-list naming ``image/jpeg`` refuses a declared ``image/jpg``, as Supabase does.
    """
    if not allowed:
        return True
    kind, _, sub = mime.split(";", 1)[0].strip().lower().partition("/")
    if not kind or not sub:
        return False
    for entry in allowed:
        a_kind, _, a_sub = entry.split(";", 1)[0].strip().lower().partition("/")
        if a_kind == "*" and a_sub in ("*", ""):
            return True
        if a_kind == kind and a_sub in ("*", sub):
            return True
    return False
