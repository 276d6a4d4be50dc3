"""Thumbnails of uploaded images (Client-Server API, "Content repository" -> "Thumbnails").

The spec's two methods:

- ``scale``: keep the aspect ratio and fit inside the requested box;
- ``crop``: fill the requested box, cutting off what does not fit (centred).

Servers never upscale: when the content already fits inside the requested box,
:func:`make_thumbnail` returns ``None`` and the caller serves the original.

Requested sizes are snapped up to a fixed ladder (:func:`snap_thumbnail_size`), so each image
has a small bounded set of thumbnails however many sizes clients ask for (otherwise every
width from 1 to 4096 would cost a decode, a resize and a stored file).

Only "real images" are thumbnailed: JPEG, PNG, GIF and WebP, detected from the bytes (never
from the uploader's declared type). Only those four Pillow plugins are ever asked to parse a
file, and the pixel count is checked from the header before anything is decoded or allocated.

Errors (both mean "serve no thumbnail", never a 500)::

    Exception
     ├── NotAnImage     not one of the four formats, or corrupt / truncated data
     └── ImageTooLarge  more pixels than the configured limit (decompression-bomb guard)

Everything here is synchronous and runs in a thread pool (``loop.run_in_executor``), so it
must stay thread-safe: it never touches Pillow's globals (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``) or the warnings filters.

Pillow is imported on the first image looked at, not with this module: it costs the
server about 3.5 MiB of RSS that most servers never need (issue 15, "Memory").
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Final

if TYPE_CHECKING:
    from PIL import Image, ImageFile

THUMBNAIL_CONTENT_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
)

JPEG_QUALITY: Final = 80
_METHODS: Final = frozenset({"crop", "scale"})
# ``scale`` requests are served from the smallest of these boxes that holds the request.
SCALE_SIZES: Final = (
    (32, 32),
    (96, 96),
    (320, 240),
    (640, 480),
    (800, 600),
    (1280, 960),
    (1600, 1200),
)
# ``crop`` requests have their width and height each snapped up to one of these.
CROP_SIDES: Final = (32, 64, 96, 128, 192, 256, 320, 480, 640, 800, 1024, 1280, 1600)
# Enough for every plugin's signature check and for the WebP canvas size (see _webp_size).
_HEADER_BYTES: Final = 30
# EXIF orientations 5-8 rotate by 90 degrees, so width and height swap.
_SWAPPING_ORIENTATIONS: Final = frozenset({5, 6, 7, 8})
# What Pillow's parsers and decoders raise on junk (ImageFile wraps some in SyntaxError;
# UnidentifiedImageError and "image file is truncated" are OSErrors).
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)


# Pillow's opener and signature check of a format, as in ``Image.OPEN``.
_Opener = tuple[
    "Callable[[IO[bytes], str | bytes], ImageFile.ImageFile]",
    "Callable[[bytes], bool | str] | None",
]


@functools.cache
def _openers() -> Mapping[str, _Opener]:
    """Pillow's opener and signature check for each of our formats, importing Pillow (once)."""
    # Importing the plugins registers them in Image.OPEN; only these four are ever tried.
    from PIL import (
        GifImagePlugin,  # noqa: F401
        Image,
        JpegImagePlugin,  # noqa: F401
        PngImagePlugin,  # noqa: F401
        WebPImagePlugin,  # noqa: F401
    )

    return MappingProxyType({fmt: Image.OPEN[fmt] for fmt in THUMBNAIL_CONTENT_TYPES})


class NotAnImage(Exception):
    """The file is not an image we thumbnail (unknown/unsupported format, corrupt or truncated
    data)."""


class ImageTooLarge(Exception):
    """The image has more pixels than allowed (decompression-bomb guard)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says. ``width`` and ``height`` are as displayed, after the EXIF
    orientation (a portrait photo stored sideways reports portrait dimensions)."""

    content_type: str  # from THUMBNAIL_CONTENT_TYPES, detected from the bytes
    width: int
    height: int
    animated: bool  # more than one frame


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    content_type: str  # image/jpeg when the source is JPEG, else image/png (keeps alpha)
    width: int
    height: int


def snap_thumbnail_size(width: int, height: int, method: str) -> tuple[int, int] | None:
    """The thumbnail size that serves a request for ``width`` x ``height`` by ``method``:
    never smaller than asked (the spec: "at least" the requested size where the image allows).

    ``scale``: the smallest box of :data:`SCALE_SIZES` at least as wide and as high; ``crop``:
    width and height each snapped up to :data:`CROP_SIDES`. None when the request is larger
    than the largest size: the caller serves the original image.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown thumbnail method {method!r}")
    if width < 1 or height < 1:
        raise ValueError(f"thumbnail size must be positive, got {width}x{height}")
    if method == "scale":
        return next(((w, h) for w, h in SCALE_SIZES if w >= width and h >= height), None)
    snapped_width = next((side for side in CROP_SIDES if side >= width), None)
    snapped_height = next((side for side in CROP_SIDES if side >= height), None)
    if snapped_width is None or snapped_height is None:
        return None
    return snapped_width, snapped_height


def probe_image(path: Path, max_pixels: int) -> ImageInfo:
    """Identify the image at ``path`` from its header, without decoding pixels.

    Raises NotAnImage for anything but JPEG, PNG, GIF or WebP (or a header Pillow cannot
    parse), ImageTooLarge when width * height exceeds ``max_pixels``. A missing file is the
    caller's bug and raises the usual OSError.
    """
    with path.open("rb") as fp:
        return _probe(fp, max_pixels)


def probe_image_bytes(data: bytes, max_pixels: int) -> ImageInfo:
    """``probe_image`` for bytes in memory (a fetched URL-preview image)."""
    return _probe(io.BytesIO(data), max_pixels)


def _probe(fp: IO[bytes], max_pixels: int) -> ImageInfo:
    with _image_errors():
        fmt, img = _open(fp, max_pixels)
        with img:
            width, height = _display_size(img.size, _orientation(fmt, img))
            # MPO (a JPEG with extra pictures, as some cameras write) is not an animation.
            animated = fmt != "JPEG" and bool(getattr(img, "is_animated", False))
            return ImageInfo(THUMBNAIL_CONTENT_TYPES[fmt], width, height, animated)


def make_thumbnail(
    path: Path, width: int, height: int, method: str, max_pixels: int
) -> Thumbnail | None:
    """A ``width`` x ``height`` thumbnail of the image at ``path`` by ``method``.

    Returns None when the image already fits inside the box (the caller serves the original).
    ``scale`` keeps the aspect ratio inside the box; ``crop`` scales so the box is covered
    (never above the original size) and cuts the centre out. EXIF orientation is applied; an
    animated image gives a still of its first frame. Errors as for :func:`probe_image`.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown thumbnail method {method!r}")
    if width < 1 or height < 1:
        raise ValueError(f"thumbnail size must be positive, got {width}x{height}")
    from PIL import ImageOps

    box = (width, height)
    with path.open("rb") as fp, _image_errors():
        fmt, img = _open(fp, max_pixels)
        with img:
            orientation = _orientation(fmt, img)
            plan = _plan(_display_size(img.size, orientation), box, method)
            if plan is None:
                return None
            if fmt == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below what we resize to.
                img.draft(None, _display_size(plan[0], orientation))
            frame = ImageOps.exif_transpose(img)  # decodes the (first) frame
        if fmt != "JPEG":
            # Not drafted, so this is the true displayed size (a PNG may carry its EXIF
            # orientation after the pixel data, where the header check could not see it).
            plan = _plan(frame.size, box, method)
            if plan is None:
                return None
        return _render(frame, plan, jpeg=fmt == "JPEG")


@contextmanager
def _image_errors() -> Iterator[None]:
    """Translate Pillow's many exceptions into ours."""
    from PIL import Image

    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard, e.g. in a GIF frame that grows the canvas.
        raise ImageTooLarge(str(exc)) from exc
    except _DECODE_ERRORS as exc:
        raise NotAnImage(f"cannot read image: {exc}") from exc


def _open(fp: IO[bytes], max_pixels: int) -> tuple[str, ImageFile.ImageFile]:
    """Like ``Image.open(fp, formats=...)`` but checks our pixel limit before Pillow does,
    so Pillow's own limit never warns, and before WebP's decoder allocates its canvas."""
    header = fp.read(_HEADER_BYTES)
    webp_size = _webp_size(header)
    if webp_size is not None:
        _check_pixels(webp_size, max_pixels)
    # accept() checks the signature; it returns a message rather than True when the codec for
    # a recognised format is missing.
    openers = _openers()
    fmt = next((f for f, (_, ok) in openers.items() if ok and ok(header[:16]) is True), None)
    if fmt is None:
        raise NotAnImage("not a JPEG, PNG, GIF or WebP image")
    factory, _ = openers[fmt]
    fp.seek(0)
    img = factory(fp, "")
    try:
        _check_pixels(img.size, max_pixels)
    except BaseException:
        img.close()
        raise
    return fmt, img


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise NotAnImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )


def _webp_size(header: bytes) -> tuple[int, int] | None:
    """The canvas size from a WebP file's first chunk header, if it is one."""
    if len(header) < 30 or header[:4] != b"RIFF" or header[8:12] != b"WEBP":
        return None
    chunk = header[12:16]
    if chunk == b"VP8 " and header[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes
        width, height = struct.unpack_from("<HH", header, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and header[20] == 0x2F:  # lossless: 14-bit sizes minus one
        bits = int.from_bytes(header[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        width = int.from_bytes(header[24:27], "little") + 1
        height = int.from_bytes(header[27:30], "little") + 1
        return width, height
    return None


def _orientation(fmt: str, img: Image.Image) -> int:
    """The EXIF orientation (1-8) as far as the header tells."""
    from PIL import ExifTags

    if fmt == "PNG" and "exif" not in img.info:
        return 1  # PngImageFile.getexif() would decode the image to look after the pixels
    value = img.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _display_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``size`` as displayed under ``orientation`` (also its own inverse)."""
    return (size[1], size[0]) if orientation in _SWAPPING_ORIENTATIONS else size


def _rounded_ratio(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, at least 1 (exact integer arithmetic)."""
    return max(1, (2 * numerator + denominator) // (2 * denominator))


def _plan(
    source: tuple[int, int], box: tuple[int, int], method: str
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(size to resize the whole image to, final size), or None if the source fits the box."""
    src_w, src_h = source
    box_w, box_h = box
    if src_w <= box_w and src_h <= box_h:
        return None
    if method == "scale":
        # Fit: the smaller of the two ratios, below 1 because the source does not fit.
        if box_w * src_h <= box_h * src_w:  # box_w / src_w <= box_h / src_h, without floats
            size = (box_w, _rounded_ratio(src_h * box_w, src_w))
        else:
            size = (_rounded_ratio(src_w * box_h, src_h), box_h)
        return size, size
    # crop: cover the box with the larger ratio, capped at 1 so we never upscale.
    if box_w * src_h >= box_h * src_w:
        scaled = source if box_w >= src_w else (box_w, _rounded_ratio(src_h * box_w, src_w))
    else:
        scaled = source if box_h >= src_h else (_rounded_ratio(src_w * box_h, src_h), box_h)
    return scaled, (min(box_w, scaled[0]), min(box_h, scaled[1]))


def _render(
    frame: Image.Image, plan: tuple[tuple[int, int], tuple[int, int]], *, jpeg: bool
) -> Thumbnail:
    from PIL import Image

    icc_profile = frame.info.get("icc_profile")
    source_mode = frame.mode
    image = _convert(frame, jpeg=jpeg)
    if not isinstance(icc_profile, bytes) or _colour_family(source_mode) != _colour_family(
        image.mode
    ):
        icc_profile = None  # e.g. a CMYK profile does not describe the RGB output
    resized, final = plan
    if image.size != resized:
        # reducing_gap: shrink by an integer factor first (fast), then LANCZOS the rest.
        image = image.resize(resized, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if final != resized:
        left = (resized[0] - final[0]) // 2
        top = (resized[1] - final[1]) // 2
        image = image.crop((left, top, left + final[0], top + final[1]))
    buffer = io.BytesIO()
    # No EXIF is written: the orientation is applied and camera metadata (GPS) stays private.
    if jpeg:
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, icc_profile=icc_profile)
    else:
        image.save(buffer, "PNG", optimize=False, icc_profile=icc_profile)
    content_type = "image/jpeg" if jpeg else "image/png"
    return Thumbnail(buffer.getvalue(), content_type, image.width, image.height)


def _convert(image: Image.Image, *, jpeg: bool) -> Image.Image:
    """A mode we can resize and save: RGB or L for JPEG; RGBA, RGB or L for PNG."""
    if image.mode.startswith("I"):
        # 16-bit greyscale: scale into 8 bits (a plain convert would clip to white).
        return image.convert("I").point(lambda value: value / 256).convert("L")
    if jpeg:
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    if image.has_transparency_data:
        return image if image.mode == "RGBA" else image.convert("RGBA")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("L" if image.mode == "1" else "RGB")


def _colour_family(mode: str) -> str:
    if mode in ("1", "L", "LA", "La") or mode.startswith("I"):
        return "grey"
    if mode in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA"):
        return "rgb"
    return mode
