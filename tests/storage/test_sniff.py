"""File types from their first bytes, the image upload check and bucket allow-lists."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image

from gatehouse.storage.images import avif_supported
from gatehouse.storage.sniff import HEAD_BYTES, canonical_mime, is_raster_image, mime_allowed, mime_matches, sniff_mime


def pillow_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (3, 2)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format=fmt)
    return buffer.getvalue()


PILLOW_FILES = [
    ("PNG", "RGB", "image/png"),
    ("JPEG", "RGB", "image/jpeg"),
    ("GIF", "P", "image/gif"),
    ("WEBP", "RGB", "image/webp"),
    ("BMP", "RGB", "image/bmp"),
    ("TIFF", "RGB", "image/tiff"),
    ("ICO", "RGBA", "image/x-icon"),
    pytest.param("AVIF", "RGB", "image/avif", marks=pytest.mark.skipif(not avif_supported(), reason="no AVIF")),
]


@pytest.mark.parametrize(("fmt", "mode", "expected"), PILLOW_FILES)
def test_real_files_made_by_pillow(fmt: str, mode: str, expected: str) -> None:
    assert sniff_mime(pillow_bytes(fmt, mode)[:HEAD_BYTES]) == expected


def test_big_endian_tiff() -> None:
    assert sniff_mime(b"MM\x00*\x00\x00\x00\x08" + bytes(16)) == "image/tiff"


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + bytes(32)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def empty_zip_bytes() -> bytes:
    buffer = io.BytesIO()
    zipfile.ZipFile(buffer, "w").close()
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (ftyp(b"avif", b"mif1", b"miaf"), "image/avif"),
        (ftyp(b"mif1", b"avif", b"miaf"), "image/avif"),
        (ftyp(b"avis", b"msf1"), "image/avif"),
        (ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
        (ftyp(b"mif1", b"heic"), "image/heic"),
        (ftyp(b"mif1", b"miaf"), "image/heif"),
        (ftyp(b"isom", b"iso2", b"mp41"), None),  # an MP4 video
        (ftyp(b"qt  "), None),
        (b"\xff\x0a\xfa\x7f", "image/jxl"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(8), "image/jxl"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        (zip_bytes(), "application/zip"),
        (empty_zip_bytes(), "application/zip"),
        (b"", None),
        (b"hello world", None),
        (b"BMW is a car, not a bitmap", None),
        (b"\x00\x00\x01\x00\x00\x00" + bytes(16), None),  # an ICO header announcing no images
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),  # RIFF, but audio
        (b"<html><body>hi</body></html>", None),
        (b"GIF88a", None),
    ],
)
def test_magic_numbers(head: bytes, expected: str | None) -> None:
    assert sniff_mime(head) == expected


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (SVG, "image/svg+xml"),
        (b"<svg>" + b"x" * 10, "image/svg+xml"),
        (b"\xef\xbb\xbf  \n" + SVG, "image/svg+xml"),
        (b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + SVG, "image/svg+xml"),
        (b'<?xml version="1.0"?>\n<!-- Created with Inkscape (http://www.inkscape.org/) -->\n\n' + SVG, "image/svg+xml"),
        (b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">' + SVG,
         "image/svg+xml"),
        (b'<!DOCTYPE svg [ <!ENTITY ns "http://www.w3.org/2000/svg"> ]>\n' + SVG, "image/svg+xml"),
        (b"<!-- a -->\n<!-- b -->\n<SVG>", "image/svg+xml"),
        (b"<!-- " + b"licence " * 400 + b"-->" + SVG, "image/svg+xml"),  # under HEAD_BYTES
        (b"<!-- never closed " + SVG, None),
        (b"<?xml version='1.0'?><html/>", None),
        (b"<svgx/>", None),
        (b"text before <svg/>", None),
    ],
)
def test_svg_text_sniff(head: bytes, expected: str | None) -> None:
    assert sniff_mime(head[:HEAD_BYTES]) == expected


def test_svg_is_recognised_but_not_a_safe_raster_image() -> None:
    assert sniff_mime(SVG) == "image/svg+xml"
    assert not is_raster_image("image/svg+xml")
    assert is_raster_image("image/png")
    assert is_raster_image("IMAGE/JPG")
    assert not is_raster_image("application/pdf")
    assert not is_raster_image(None)


@pytest.mark.parametrize(
    ("mime", "canonical"),
    [
        ("image/jpg", "image/jpeg"),
        ("Image/JPEG; charset=binary", "image/jpeg"),
        ("image/pjpeg", "image/jpeg"),
        ("image/vnd.microsoft.icon", "image/x-icon"),
        ("image/x-ms-bmp", "image/bmp"),
        ("text/plain;charset=UTF-8", "text/plain"),
    ],
)
def test_canonical_mime(mime: str, canonical: str) -> None:
    assert canonical_mime(mime) == canonical


@pytest.mark.parametrize(
    ("declared", "sniffed", "ok"),
    [
        ("image/png", "image/png", True),
        ("image/jpg", "image/jpeg", True),
        ("IMAGE/JPEG; q=1", "image/jpeg", True),
        ("image/x-icon", "image/x-icon", True),
        ("image/vnd.microsoft.icon", "image/x-icon", True),
        ("image/heif", "image/heic", True),
        ("image/heic", "image/heif", True),
        ("image/svg+xml", "image/svg+xml", True),
        ("image/png", "image/jpeg", False),  # a JPEG under a PNG label
        ("image/png", "image/svg+xml", False),  # script under an image label
        ("image/png", "application/pdf", False),
        ("image/png", None, False),  # HTML or anything else we cannot recognise
        ("image/x-portable-pixmap", None, False),  # image types we cannot check are refused
        ("application/pdf", "image/png", True),  # only image/* declarations are checked
        ("application/octet-stream", "image/svg+xml", True),
        ("text/plain", None, True),
    ],
)
def test_mime_matches(declared: str, sniffed: str | None, ok: bool) -> None:
    assert mime_matches(declared, sniffed) is ok


@pytest.mark.parametrize(
    ("mime", "allowed", "ok"),
    [
        ("image/png", None, True),
        ("image/png", [], True),
        ("image/png", ["image/png"], True),
        ("image/png", ["image/jpeg"], False),
        ("image/png", ["image/*"], True),
        ("video/mp4", ["image/*"], False),
        ("image/png", ["image/jpeg", "image/png"], True),
        ("IMAGE/PNG", ["image/png"], True),
        ("text/plain;charset=UTF-8", ["text/plain"], True),
        ("text/plain", ["text/plain;charset=utf-8"], True),
        ("application/json", ["*/*"], True),
        ("application/json", ["*"], True),
        ("image/jpg", ["image/jpeg"], False),  # aliases are not resolved, as in Supabase
        ("image", ["image/*"], False),
        ("", ["image/*"], False),
        ("imagex/png", ["image/*"], False),
    ],
)
def test_mime_allowed(mime: str, allowed: list[str] | None, ok: bool) -> None:
    assert mime_allowed(mime, allowed) is ok
