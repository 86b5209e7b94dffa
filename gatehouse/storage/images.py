"""Image transformations as Supabase Storage serves them on ``/render/image/...``.

Supabase hands the work to imgproxy; we do it in-process with Pillow, following imgproxy's
geometry so that the same query gives an image of the same size:

* ``cover`` (imgproxy ``fill``) scales to cover the box, then crops the centre;
  ``contain`` (``fit``) scales to fit inside the box, with no padding; ``fill`` (``force``)
  stretches to the box. With one side given, every mode keeps the aspect ratio.
* Nothing is enlarged (imgproxy's default, ``enlarge:0``): a box bigger than the image gives the
  image at its own size, still cropped for ``cover``; ``fill`` shrinks both sides by the same
  factor so that neither grows.
* Sizes above :data:`MAX_DIMENSION` are clamped, as Supabase clamps to its
  ``IMAGE_TRANSFORMATION_LIMIT_MAX_SIZE`` (2000 by default there); negative or non-integer sizes and a quality outside
  20..100 are refused (Supabase's request schema refuses them too).
* EXIF orientation is applied, colours are converted to sRGB, and the output carries no
  metadata (EXIF, XMP, ICC, comments, text chunks). Animated GIF/WebP give their first frame.
  HEIC and SVG are not rendered (:func:`can_render`).

Rendering is CPU work on untrusted bytes: :func:`render` is synchronous (run it in a thread, or
use :func:`render_async`), decodes only the formats listed in :data:`_INPUT_FORMATS` (never EPS,
which Pillow hands to Ghostscript, nor SVG), and refuses images above ``max_input_pixels`` before
decoding a single pixel. Rendered variants are kept on disk by ``storage.render_cache``.
"""

from __future__ import annotations

import asyncio
import functools
import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError, features

from gatehouse.core.errors import GatehouseError
from gatehouse.storage.sniff import canonical_mime

__all__ = [
    "DEFAULT_QUALITY",
    "MAX_DIMENSION",
    "MAX_INPUT_PIXELS",
    "Transform",
    "avif_supported",
    "can_render",
    "render",
    "render_async",
]

Resize = Literal["cover", "contain", "fill"]
Format = Literal["origin", "webp", "avif", "png", "jpeg"]

#: Largest width or height a transform may ask for; larger requests are clamped to it.
MAX_DIMENSION = 2500
MIN_QUALITY, MAX_QUALITY, DEFAULT_QUALITY = 20, 100, 80
#: Largest source image (width x height) :func:`render` decodes: 40 MP is 160 MB as RGBA.
MAX_INPUT_PIXELS = 40_000_000

_RESIZES: dict[str, Resize] = {"cover": "cover", "contain": "contain", "fill": "fill"}
_FORMATS: dict[str, Format] = {
    "origin": "origin", "webp": "webp", "avif": "avif", "png": "png", "jpeg": "jpeg", "jpg": "jpeg",
}

#: Pillow decoders we trust with uploads (the JPEG one also opens multi-picture "MPO" JPEGs).
_INPUT_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "AVIF", "BMP", "TIFF", "ICO")
#: ``format=origin``: these keep their format; GIF (first frame), BMP, TIFF and ICO become PNG.
_ORIGIN_OUTPUT = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "AVIF": "AVIF"}
_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "AVIF": "image/avif"}
_RENDERABLE = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff", "image/x-icon"}

#: Everything Pillow raises on bytes it cannot decode: corrupt, truncated or not an image.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, ZeroDivisionError)


def _invalid(message: str) -> GatehouseError:
    return GatehouseError("InvalidRequest", message, status=400)


def _invalid_image(detail: str) -> GatehouseError:
    return GatehouseError("InvalidImage", f"The object is not an image that can be transformed ({detail})", status=422)


def _too_large(pixels: int | None, limit: int) -> GatehouseError:
    size = f"{pixels} pixels" if pixels is not None else "its size"
    return GatehouseError(
        "EntityTooLarge", f"The image is too large to transform: {size}, the limit is {limit} pixels", status=413
    )


@functools.cache
def avif_supported() -> bool:
    """Whether this Pillow reads and writes AVIF (Pillow 11.2+ built with libavif)."""
    return "avif" in features.modules and bool(features.check_module("avif"))


@functools.cache
def _input_formats() -> tuple[str, ...]:
    """:data:`_INPUT_FORMATS` that this Pillow can open (AVIF needs a libavif build)."""
    Image.init()
    return tuple(name for name in _INPUT_FORMATS if name in Image.OPEN)


@functools.cache
def _cms_supported() -> bool:
    return bool(features.check_module("littlecms2"))


def can_render(mime: str) -> bool:
    """Whether :func:`render` takes sources of this type (never SVG, HEIC or non-images)."""
    kind = canonical_mime(mime)
    return kind in _RENDERABLE or (kind == "image/avif" and avif_supported())


@dataclass(frozen=True)
class Transform:
    """One ``/render/image`` request: a box, how to fit the image into it, and the output."""

    width: int | None = None
    height: int | None = None
    resize: Resize = "cover"
    quality: int = DEFAULT_QUALITY
    format: Format = "origin"

    def __post_init__(self) -> None:
        for side in (self.width, self.height):
            if side is not None and side < 1:
                raise ValueError("width and height must be None or positive")
        if not MIN_QUALITY <= self.quality <= MAX_QUALITY:
            raise ValueError(f"quality must be within {MIN_QUALITY}..{MAX_QUALITY}")

    @classmethod
    def parse(
        cls, params: Mapping[str, str], *, accept: str | None = None, max_dimension: int = MAX_DIMENSION
    ) -> Transform:
        """A transform from query parameters; other parameters (``token``, ``download``) are ignored.

        ``width``/``height``: absent, empty or 0 mean "not given" (Supabase treats 0 as unset),
        above ``max_dimension`` they are clamped. Without ``format``, a request whose ``accept``
        header takes WebP gets WebP, as Supabase's automatic optimisation does (the response
        must then say ``Vary: Accept``); ``format=origin`` opts out.
        """
        width = _dimension(params, "width", max_dimension)
        height = _dimension(params, "height", max_dimension)
        resize = _choice(params, "resize", _RESIZES, "cover")
        quality_text = (params.get("quality") or "").strip()
        quality = DEFAULT_QUALITY
        if quality_text:
            digits = quality_text.lstrip("0")
            if not _is_digits(quality_text) or len(digits) > 3 or not MIN_QUALITY <= int(digits or 0) <= MAX_QUALITY:
                raise _invalid(f"quality must be an integer from {MIN_QUALITY} to {MAX_QUALITY}, got {_echo(quality_text)}")
            quality = int(digits)
        if params.get("format"):
            output = _choice(params, "format", _FORMATS, "origin")
        else:
            output = "webp" if accept is not None and _accepts_webp(accept) else "origin"
        return cls(width, height, resize, quality, output)

    @property
    def key(self) -> str:
        """A stable, filename-safe name for the output this transform gives, for caching.

        Transforms that render alike share a key: with fewer than two sides the resize mode
        makes no difference.
        """
        mode = self.resize if self.width and self.height else "scale"
        return f"{self.width or 0}x{self.height or 0}-{mode}-q{self.quality}-{self.format}"


def _dimension(params: Mapping[str, str], name: str, limit: int) -> int | None:
    text = (params.get(name) or "").strip()
    if not text:
        return None
    if text.startswith("-") and _is_digits(text[1:]):
        raise _invalid(f"{name} must be 0 or more, got {_echo(text)}")
    if not _is_digits(text):
        raise _invalid(f"{name} must be a whole number of pixels, got {_echo(text)}")
    digits = text.lstrip("0")
    if not digits:
        return None
    return limit if len(digits) > len(str(limit)) else min(int(digits), limit)


_C = TypeVar("_C", bound=str)


def _choice(params: Mapping[str, str], name: str, choices: Mapping[str, _C], default: _C) -> _C:
    text = params.get(name) or ""
    if not text:
        return default
    if text not in choices:
        allowed = ", ".join(dict.fromkeys(choices.values()))
        raise _invalid(f"{name} must be one of {allowed}; got {_echo(text)}")
    return choices[text]


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _echo(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _accepts_webp(accept: str) -> bool:
    for part in accept.lower().split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        if kind == "image/webp":
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
    return False


# --- rendering -------------------------------------------------------------------------------


def render(source: Path, transform: Transform, *, max_input_pixels: int = MAX_INPUT_PIXELS) -> tuple[bytes, str]:
    """The transformed image and its content type. Blocking and CPU-bound: call it in a thread.

    ``format=avif`` falls back to WebP when this Pillow cannot encode AVIF
    (:func:`avif_supported`); the returned content type always tells the truth. Quality applies
    to JPEG, WebP and AVIF; PNG is lossless and ignores it.

    Raises GatehouseError ``EntityTooLarge`` (413) for sources over ``max_input_pixels`` (or over
    Pillow's own decompression-bomb limit), and ``InvalidImage`` (422, imgproxy's status for a
    source it cannot process) for anything that is not a decodable image of a supported format.
    """
    with open(source, "rb") as fp:
        img, source_format, size = _decode(fp, transform, max_input_pixels)
    with img:
        return _encode(_fit(_to_working_mode(_to_srgb(img)), _plan(size, transform)), transform, source_format)


async def render_async(
    source: Path, transform: Transform, *, max_input_pixels: int = MAX_INPUT_PIXELS
) -> tuple[bytes, str]:
    """:func:`render` in a worker thread."""
    return await asyncio.to_thread(render, source, transform, max_input_pixels=max_input_pixels)


def _decode(
    fp: io.BufferedReader, transform: Transform, max_input_pixels: int
) -> tuple[Image.Image, str, tuple[int, int]]:
    """Open, check the size from the header, decode (JPEGs shrunk by libjpeg) and orient.

    Returns the image, Pillow's name for its format and its full size once oriented (the
    decoded image may be smaller), which is what the geometry is computed from.
    """
    try:
        img = Image.open(fp, formats=_input_formats())
        width, height = img.size
        if width * height > max_input_pixels:
            raise _too_large(width * height, max_input_pixels)
        source_format = img.format or ""
        rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        oriented = (height, width) if rotated else (width, height)
        if source_format in ("JPEG", "MPO"):
            target, _ = _plan(oriented, transform)
            if target[0] < oriented[0]:  # let libjpeg decode at 1/2, 1/4 or 1/8 scale
                img.draft(None, (target[1], target[0]) if rotated else target)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return img, source_format, oriented
    except GatehouseError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(None, max_input_pixels) from None
    except UnidentifiedImageError:
        raise _invalid_image("unrecognised format") from None
    except _DECODE_ERRORS as exc:
        # Pillow's own words ("image file is truncated"), unless they could name a server path.
        detail = "unreadable" if isinstance(exc, OSError) and exc.filename else str(exc)[:200]
        raise _invalid_image(detail or type(exc).__name__) from None


def _to_srgb(img: Image.Image) -> Image.Image:
    """Apply an embedded ICC profile, since the output will not carry it."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK") or not _cms_supported():
        return img
    try:
        converted = ImageCms.profileToProfile(
            img, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
            outputMode="RGBA" if img.mode == "RGBA" else "RGB",
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img  # a broken profile: keep the pixels as they are
    return converted if converted is not None else img


def _to_working_mode(img: Image.Image) -> Image.Image:
    """L, RGB or RGBA: what resampling and every encoder handle."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or img.info.get("transparency") is not None:
        return img.convert("RGBA")
    if img.mode in ("L", "RGB"):
        return img
    if img.mode == "1" or img.mode == "F":
        return img.convert("L")
    if img.mode.startswith("I"):  # 16/32-bit grey: keep the top 8 bits
        return img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX


def _plan(size: tuple[int, int], t: Transform) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size to scale to, size after the centre crop): imgproxy's geometry with enlarging off."""
    w, h = size
    if t.width is None and t.height is None:
        return size, size
    if t.width is None or t.height is None:
        s = min(1.0, t.width / w if t.width else (t.height or h) / h)
        scaled = (_px(w * s), _px(h * s))
        return scaled, scaled
    sx, sy = t.width / w, t.height / h
    if t.resize == "fill":
        grow = max(sx, sy)
        if grow > 1:
            sx, sy = sx / grow, sy / grow
        scaled = (_px(w * sx), _px(h * sy))
        return scaled, scaled
    s = min(1.0, max(sx, sy) if t.resize == "cover" else min(sx, sy))
    scaled = (_px(w * s), _px(h * s))
    if t.resize == "contain":
        return scaled, scaled
    return scaled, (min(t.width, scaled[0]), min(t.height, scaled[1]))


def _px(x: float) -> int:
    return max(1, int(x + 0.5))


def _fit(img: Image.Image, plan: tuple[tuple[int, int], tuple[int, int]]) -> Image.Image:
    scaled, final = plan
    if img.size != scaled:
        img = img.resize(scaled, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if final != scaled:
        left, top = (scaled[0] - final[0]) // 2, (scaled[1] - final[1]) // 2
        img = img.crop((left, top, left + final[0], top + final[1]))
    return img


def _output_format(t: Transform, source_format: str) -> str:
    if t.format == "origin":
        out = _ORIGIN_OUTPUT.get(source_format, "PNG")
    else:
        out = t.format.upper()
    if out == "AVIF" and not avif_supported():
        return "WEBP"
    return out


def _encode(img: Image.Image, t: Transform, source_format: str) -> tuple[bytes, str]:
    out = _output_format(t, source_format)
    if out == "JPEG" and img.mode == "RGBA":  # JPEG has no alpha: flatten onto white
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=img.getchannel("A"))
        img = flat
    elif out in ("WEBP", "AVIF") and img.mode == "L":
        img = img.convert("RGB")
    img.info = {}  # savers read ICC, comments and transparency from here: strip them all
    options: dict[str, object] = {}
    if out == "JPEG":
        options = {"quality": t.quality, "optimize": True}
    elif out == "WEBP":
        options = {"quality": t.quality}
    elif out == "AVIF":
        options = {"quality": t.quality, "speed": 8}  # imgproxy's default AVIF speed
    buffer = io.BytesIO()
    img.save(buffer, format=out, **options)
    return buffer.getvalue(), _CONTENT_TYPES[out]
