"""Image transformations (``/render/image``): geometry, formats, limits and the query they are parsed from."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.images import (
    MAX_DIMENSION,
    Transform,
    avif_supported,
    can_render,
    render,
    render_async,
)
from gatehouse.storage.sniff import sniff_mime

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def save(path: Path, img: Image.Image, fmt: str | None = None, **options: object) -> Path:
    img.save(path, format=fmt, **options)
    return path


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def stripes(size: tuple[int, int], colours: list[tuple[int, int, int]]) -> Image.Image:
    """Vertical bands of equal width, left to right."""
    img = Image.new("RGB", size)
    band = size[0] // len(colours)
    for i, colour in enumerate(colours):
        img.paste(colour, (i * band, 0, (i + 1) * band if i < len(colours) - 1 else size[0], size[1]))
    return img


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def near(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims any size: the bomb never has to exist to be refused."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def wide_png(tmp_path: Path) -> Path:
    return save(tmp_path / "wide.png", noise((400, 200)))


# --- geometry --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({}, (400, 200)),
        ({"width": "100"}, (100, 50)),
        ({"height": "50"}, (100, 50)),
        ({"width": "100", "height": "100"}, (100, 100)),  # cover is the default
        ({"width": "100", "height": "100", "resize": "cover"}, (100, 100)),
        ({"width": "50", "height": "150", "resize": "cover"}, (50, 150)),
        ({"width": "100", "height": "100", "resize": "contain"}, (100, 50)),
        ({"width": "100", "height": "100", "resize": "fill"}, (100, 100)),
        ({"width": "200", "height": "50", "resize": "fill"}, (200, 50)),
        # one side given: every mode keeps the aspect ratio
        ({"width": "100", "resize": "fill"}, (100, 50)),
        ({"height": "100", "resize": "contain"}, (200, 100)),
        # never enlarged (imgproxy's default)
        ({"width": "800"}, (400, 200)),
        ({"height": "400", "resize": "contain"}, (400, 200)),
        ({"width": "800", "height": "800", "resize": "contain"}, (400, 200)),
        ({"width": "800", "height": "800", "resize": "cover"}, (400, 200)),
        ({"width": "800", "height": "100", "resize": "cover"}, (400, 100)),  # cropped, not scaled up
        ({"width": "800", "height": "100", "resize": "fill"}, (400, 50)),  # both sides shrunk alike
    ],
)
def test_output_size(wide_png: Path, params: dict[str, str], size: tuple[int, int]) -> None:
    data, content_type = render(wide_png, Transform.parse(params))
    assert content_type == "image/png"
    assert decode(data).size == size


def test_cover_crops_the_centre(tmp_path: Path) -> None:
    source = save(tmp_path / "flag.png", stripes((300, 100), [RED, GREEN, BLUE]))
    out = decode(render(source, Transform(100, 100, "cover"))[0])
    assert out.size == (100, 100)
    assert all(near(out.getpixel(xy), GREEN) for xy in [(0, 0), (50, 50), (99, 99)])


def test_contain_keeps_everything_without_padding(tmp_path: Path) -> None:
    source = save(tmp_path / "flag.png", stripes((300, 100), [RED, GREEN, BLUE]))
    out = decode(render(source, Transform(100, 100, "contain"))[0])
    assert out.size == (100, 33)
    assert near(out.getpixel((2, 16)), RED) and near(out.getpixel((50, 16)), GREEN) and near(out.getpixel((97, 16)), BLUE)


def test_fill_stretches(tmp_path: Path) -> None:
    source = save(tmp_path / "flag.png", stripes((200, 100), [RED, BLUE]))
    out = decode(render(source, Transform(50, 50, "fill"))[0])
    assert out.size == (50, 50)
    assert near(out.getpixel((5, 25)), RED) and near(out.getpixel((45, 25)), BLUE)


def exif_jpeg(path: Path, size: tuple[int, int], orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Gatehouse Cam"
    return save(path, stripes(size, [RED, BLUE]), "JPEG", exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Orientation 6: the camera was turned 90° clockwise; the stored left edge is the top.
    source = exif_jpeg(tmp_path / "photo.jpg", (40, 20), 6)
    data, content_type = render(source, Transform())
    out = decode(data)
    assert (content_type, out.size) == ("image/jpeg", (20, 40))
    assert near(out.getpixel((10, 3)), RED) and near(out.getpixel((10, 36)), BLUE)
    assert not out.getexif()  # and the tag is gone, so viewers don't rotate it again
    assert decode(render(source, Transform(width=10))[0]).size == (10, 20)


def test_big_rotated_jpeg_is_shrunk_while_decoding(tmp_path: Path) -> None:
    source = exif_jpeg(tmp_path / "photo.jpg", (1600, 800), 8)
    assert decode(render(source, Transform(width=50))[0]).size == (50, 100)
    assert decode(render(source, Transform(width=100, height=100))[0]).size == (100, 100)


# --- formats ---------------------------------------------------------------------------------

AVIF_OR_WEBP = "image/avif" if avif_supported() else "image/webp"


@pytest.mark.parametrize(
    ("fmt", "mode", "output", "content_type"),
    [
        ("PNG", "RGB", "origin", "image/png"),
        ("JPEG", "RGB", "origin", "image/jpeg"),
        ("WEBP", "RGB", "origin", "image/webp"),
        ("GIF", "P", "origin", "image/png"),  # first frame, as PNG
        ("BMP", "RGB", "origin", "image/png"),
        ("TIFF", "RGB", "origin", "image/png"),
        ("ICO", "RGBA", "origin", "image/png"),
        ("PNG", "RGB", "webp", "image/webp"),
        ("PNG", "RGB", "jpeg", "image/jpeg"),
        ("JPEG", "RGB", "png", "image/png"),
        ("JPEG", "RGB", "avif", AVIF_OR_WEBP),  # WebP when this Pillow cannot write AVIF
        ("PNG", "L", "webp", "image/webp"),
        ("PNG", "L", "origin", "image/png"),
        pytest.param("AVIF", "RGB", "origin", "image/avif",
                     marks=pytest.mark.skipif(not avif_supported(), reason="no AVIF")),
    ],
)
def test_output_format(tmp_path: Path, fmt: str, mode: str, output: str, content_type: str) -> None:
    source = save(tmp_path / "in", Image.new(mode, (32, 24), 90), fmt)
    data, got = render(source, Transform.parse({"format": output, "width": "16"}))
    assert got == content_type
    assert sniff_mime(data) == content_type
    assert decode(data).size == (16, 12)


def test_transparency_survives_or_is_flattened_onto_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (10, 0, 20, 20))
    source = save(tmp_path / "alpha.png", img)
    webp = decode(render(source, Transform(format="webp", quality=100))[0])
    assert webp.mode == "RGBA" and webp.getpixel((2, 10))[3] == 0  # type: ignore[index]
    jpeg = decode(render(source, Transform(format="jpeg"))[0])
    assert jpeg.mode == "RGB" and near(jpeg.getpixel((2, 10)), WHITE) and near(jpeg.getpixel((17, 10)), RED)


def test_palette_transparency_is_kept(tmp_path: Path) -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (5, 0, 10, 10))
    source = save(tmp_path / "pal.png", img, transparency=0)
    out = decode(render(source, Transform())[0])
    assert out.getpixel((1, 1))[3] == 0 and out.getpixel((8, 1)) == (255, 0, 0, 255)  # type: ignore[index]


def test_sixteen_bit_grey_keeps_its_brightness(tmp_path: Path) -> None:
    source = save(tmp_path / "deep.png", Image.new("I;16", (8, 8), 65535))
    out = decode(render(source, Transform())[0])
    assert out.mode == "L" and out.getpixel((4, 4)) == 255


def test_cmyk_jpeg_comes_out_rgb(tmp_path: Path) -> None:
    source = save(tmp_path / "print.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")
    out = decode(render(source, Transform(format="webp", quality=100))[0])
    assert out.mode == "RGB" and near(out.getpixel((4, 4)), RED, tolerance=60)


@pytest.mark.parametrize(("output", "content_type"), [("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_quality_changes_the_size(tmp_path: Path, output: str, content_type: str) -> None:
    source = save(tmp_path / "noise.png", noise((128, 128)))
    low, got = render(source, Transform.parse({"format": output, "quality": "20"}))
    high, _ = render(source, Transform.parse({"format": output, "quality": "95"}))
    assert got == content_type
    assert len(low) < len(high) * 0.7


SECRETS = (b"Gatehouse Cam", b"52.2 N", b"secret-xmp", b"secret-comment", b"secret-author")
METADATA_KEYS = {"exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment", "Author", "dpi"}


@pytest.mark.parametrize("output", ["origin", "png", "webp", "jpeg", "avif"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_metadata_is_stripped(tmp_path: Path, fmt: str, output: str) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Gatehouse Cam"
    exif[0x0112] = 1
    exif[0x010E] = "52.2 N"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = noise((40, 30))
    if fmt == "JPEG":
        source = save(tmp_path / "in.jpg", img, fmt, exif=exif.tobytes(), icc_profile=icc,
                      xmp=b"<x:xmpmeta>secret-xmp</x:xmpmeta>", comment=b"secret-comment", dpi=(300, 300))
    else:
        text = PngInfo()
        text.add_text("Author", "secret-author")
        source = save(tmp_path / "in.png", img, fmt, exif=exif.tobytes(), icc_profile=icc, pnginfo=text, dpi=(300, 300))
    data, _ = render(source, Transform.parse({"format": output, "width": "20"}))
    out = decode(data)
    assert not any(secret in data for secret in SECRETS)
    assert not METADATA_KEYS & set(out.info)
    assert not out.getexif()


# --- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("header", "limit"),
    [
        (png_header(7000, 7000), None),  # 49 MP: over our default of 40 MP
        (png_header(10_000, 10_000), None),  # where Pillow starts to warn
        (png_header(100_000, 100_000), None),  # where Pillow refuses by itself
        (png_header(11, 10), 100),
    ],
)
def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path, header: bytes, limit: int | None) -> None:
    source = tmp_path / "bomb.png"
    source.write_bytes(header)
    with pytest.raises(GatehouseError) as caught:
        if limit is None:
            render(source, Transform(width=10))
        else:
            render(source, Transform(width=10), max_input_pixels=limit)
    assert (caught.value.code, caught.value.status) == ("EntityTooLarge", 413)
    assert "too large" in caught.value.message


def test_the_pixel_limit_is_inclusive(tmp_path: Path) -> None:
    source = save(tmp_path / "ok.png", Image.new("RGB", (10, 10)))
    assert render(source, Transform(), max_input_pixels=100)[1] == "image/png"


def truncated_png() -> bytes:
    buffer = io.BytesIO()
    noise((64, 64)).save(buffer, "PNG")
    return buffer.getvalue()[:2000]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"just some text",
        random.Random(1).randbytes(4096),
        truncated_png(),
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",  # must never reach Ghostscript
        b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    ],
    ids=["empty", "text", "random", "truncated-png", "svg", "eps", "pdf", "png-garbage"],
)
def test_non_images_are_refused(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "blob"
    source.write_bytes(content)
    with pytest.raises(GatehouseError) as caught:
        render(source, Transform(width=10))
    assert (caught.value.code, caught.value.status) == ("InvalidImage", 422)


def test_a_missing_source_is_not_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        render(tmp_path / "gone.png", Transform())


@pytest.mark.parametrize(
    ("mime", "ok"),
    [("image/png", True), ("image/jpg", True), ("image/gif", True), ("image/webp", True),
     ("image/avif", avif_supported()), ("image/svg+xml", False), ("image/heic", False), ("application/pdf", False)],
)
def test_can_render(mime: str, ok: bool) -> None:
    assert can_render(mime) is ok


# --- parsing ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, Transform()),
        ({"width": "100", "height": "50"}, Transform(100, 50)),
        ({"width": "0", "height": ""}, Transform()),  # 0 and empty mean "not given", as in Supabase
        ({"width": "99999"}, Transform(width=MAX_DIMENSION)),  # clamped, as Supabase clamps
        ({"height": "1" * 5000}, Transform(height=MAX_DIMENSION)),
        ({"resize": "contain", "quality": "20", "format": "avif"}, Transform(resize="contain", quality=20, format="avif")),
        ({"resize": "fill", "quality": "100", "format": "jpg"}, Transform(resize="fill", quality=100, format="jpeg")),
        ({"format": "origin", "token": "x", "download": ""}, Transform()),
        ({"width": "0064", "quality": "080"}, Transform(width=64)),
        ({"width": "0" * 20}, Transform()),
    ],
)
def test_parse(params: dict[str, str], expected: Transform) -> None:
    assert Transform.parse(params) == expected


def test_the_clamp_is_configurable() -> None:
    assert Transform.parse({"width": "2100"}, max_dimension=2000).width == 2000


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"width": "-1"}, "width must be 0 or more, got '-1'"),
        ({"height": "abc"}, "height must be a whole number of pixels, got 'abc'"),
        ({"width": "1.5"}, "width must be a whole number of pixels, got '1.5'"),
        ({"width": "١٢"}, "width must be a whole number of pixels"),  # non-ASCII digits
        ({"quality": "19"}, "quality must be an integer from 20 to 100, got '19'"),
        ({"quality": "101"}, "quality must be an integer from 20 to 100, got '101'"),
        ({"quality": "high"}, "quality must be an integer from 20 to 100"),
        ({"quality": "9" * 5000}, "quality must be an integer from 20 to 100"),  # int() would refuse it
        ({"quality": "0"}, "quality must be an integer from 20 to 100"),
        ({"resize": "stretch"}, "resize must be one of cover, contain, fill; got 'stretch'"),
        ({"resize": "Cover"}, "resize must be one of cover, contain, fill"),
        ({"format": "gif"}, "format must be one of origin, webp, avif, png, jpeg; got 'gif'"),
        ({"format": "x" * 100}, "got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'"),
    ],
)
def test_parse_errors(params: dict[str, str], message: str) -> None:
    with pytest.raises(GatehouseError) as caught:
        Transform.parse(params)
    assert (caught.value.code, caught.value.status) == ("InvalidRequest", 400)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("params", "accept", "output"),
    [
        ({}, "image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "webp"),  # Chrome's <img> Accept
        ({}, "image/webp;q=0", "origin"),
        ({}, "image/png,image/*;q=0.8", "origin"),
        ({}, None, "origin"),
        ({"format": "origin"}, "image/webp", "origin"),  # how clients opt out
        ({"format": "avif"}, "image/webp", "avif"),
    ],
)
def test_format_follows_accept_when_not_given(params: dict[str, str], accept: str | None, output: str) -> None:
    assert Transform.parse(params, accept=accept).format == output


def test_keys_are_stable_and_tell_outputs_apart() -> None:
    assert Transform(100, 50, "contain", 75, "webp").key == "100x50-contain-q75-webp"
    assert Transform(width=100, resize="fill").key == Transform(width=100).key  # one side: mode is moot
    keys = {t.key for t in [Transform(), Transform(100), Transform(None, 100), Transform(100, 100),
                            Transform(100, 100, "fill"), Transform(quality=50), Transform(format="png")]}
    assert len(keys) == 7
    assert all(key.replace("-", "").replace("x", "").isalnum() for key in keys)


def test_transforms_cannot_be_built_out_of_range() -> None:
    with pytest.raises(ValueError):
        Transform(width=0)
    with pytest.raises(ValueError):
        Transform(quality=5)


async def test_render_async(wide_png: Path) -> None:
    data, content_type = await render_async(wide_png, Transform(width=40, format="webp"))
    assert content_type == "image/webp" and decode(data).size == (40, 20)
