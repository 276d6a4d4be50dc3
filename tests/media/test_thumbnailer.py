"""Thumbnails (Client-Server API, "Content repository" -> "Thumbnails"): the four formats are
detected from the bytes, crop and scale give the spec's sizes and never upscale, an image that
already fits gives None (serve the original), and junk or bombs are refused cleanly."""

from __future__ import annotations

import io
import math
import random
import struct
import time
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from peyvand.media.thumbnailer import (
    CROP_SIDES,
    SCALE_SIZES,
    THUMBNAIL_CONTENT_TYPES,
    ImageInfo,
    ImageTooLarge,
    NotAnImage,
    Thumbnail,
    make_thumbnail,
    probe_image,
    snap_thumbnail_size,
)

LIMIT = 10_000_000
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def _write(path: Path, image: Image.Image, fmt: str, **params: Any) -> Path:
    image.save(path, fmt, **params)
    return path


def _noise(size: tuple[int, int], seed: int = 1) -> Image.Image:
    """Incompressible content, so a truncated file really lacks pixel data."""
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def _decode(thumb: Thumbnail) -> Image.Image:
    """The thumbnail decodes as the type and size it claims."""
    image = Image.open(io.BytesIO(thumb.data))
    image.load()
    assert image.format is not None
    assert THUMBNAIL_CONTENT_TYPES[image.format] == thumb.content_type
    assert image.size == (thumb.width, thumb.height)
    return image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _webp_claiming(width: int, height: int) -> bytes:
    """A tiny extended-format WebP whose canvas header claims width x height."""
    vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- probing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
def test_probe_detects_the_four_formats(tmp_path: Path, fmt: str, content_type: str) -> None:
    path = _write(tmp_path / "upload", Image.new("RGB", (120, 80), RED), fmt)

    assert probe_image(path, LIMIT) == ImageInfo(content_type, 120, 80, animated=False)


def test_probe_ignores_the_file_extension(tmp_path: Path) -> None:
    path = _write(tmp_path / "photo.jpg", Image.new("RGB", (10, 20), RED), "PNG")

    assert probe_image(path, LIMIT).content_type == "image/png"


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "PPM", "ICO"])
def test_other_image_formats_are_not_thumbnailed(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path / f"image.{fmt.lower()}", Image.new("RGB", (16, 16), RED), fmt)

    with pytest.raises(NotAnImage):
        probe_image(path, LIMIT)
    with pytest.raises(NotAnImage):
        make_thumbnail(path, 8, 8, "scale", LIMIT)


def test_probe_reports_displayed_size_after_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    path = _write(tmp_path / "sideways.jpg", Image.new("RGB", (200, 100), RED), "JPEG", exif=exif)

    assert probe_image(path, LIMIT) == ImageInfo("image/jpeg", 100, 200, animated=False)


def test_animated_gif_is_animated_and_thumbnails_to_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (200, 100), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    assert probe_image(path, LIMIT) == ImageInfo("image/gif", 200, 100, animated=True)
    thumb = make_thumbnail(path, 50, 50, "scale", LIMIT)
    assert thumb is not None
    assert (thumb.content_type, thumb.width, thumb.height) == ("image/png", 50, 25)
    still = _decode(thumb)
    assert not getattr(still, "is_animated", False)
    assert still.convert("RGB").getpixel((25, 12)) == RED


def test_animated_webp_is_animated(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in (RED, BLUE)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, "WEBP", save_all=True, append_images=frames[1:], duration=100)

    assert probe_image(path, LIMIT) == ImageInfo("image/webp", 64, 64, animated=True)
    thumb = make_thumbnail(path, 32, 32, "crop", LIMIT)
    assert thumb is not None
    assert _decode(thumb).size == (32, 32)


def test_multi_picture_jpeg_is_a_still_jpeg(tmp_path: Path) -> None:
    # MPO, as stereo cameras write: a JPEG with a second picture appended.
    pictures = [Image.new("RGB", (100, 60), colour) for colour in (RED, BLUE)]
    path = tmp_path / "stereo.jpg"
    pictures[0].save(path, "MPO", save_all=True, append_images=pictures[1:])

    assert probe_image(path, LIMIT) == ImageInfo("image/jpeg", 100, 60, animated=False)
    thumb = make_thumbnail(path, 50, 50, "scale", LIMIT)
    assert thumb is not None
    assert (thumb.content_type, thumb.width, thumb.height) == ("image/jpeg", 50, 30)


# --- sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize(
    ("source", "box", "method", "expected"),
    [
        # landscape
        ((400, 200), (100, 100), "scale", (100, 50)),
        ((400, 200), (100, 100), "crop", (100, 100)),
        ((400, 200), (800, 100), "scale", (200, 100)),
        ((400, 200), (800, 100), "crop", (400, 100)),  # would need upscaling to 800: cut only
        ((400, 200), (100, 150), "crop", (100, 150)),  # scaled to 300x150, centre cut
        # portrait
        ((200, 400), (100, 100), "scale", (50, 100)),
        ((200, 400), (100, 100), "crop", (100, 100)),
        ((200, 400), (50, 300), "scale", (50, 100)),
        ((200, 400), (50, 300), "crop", (50, 300)),  # scaled to 150x300
        ((200, 400), (300, 50), "crop", (200, 50)),  # never upscaled to 300 wide
        # square
        ((300, 300), (100, 50), "scale", (50, 50)),
        ((300, 300), (100, 50), "crop", (100, 50)),
        ((300, 300), (400, 200), "scale", (200, 200)),
        ((300, 300), (400, 200), "crop", (300, 200)),
        # a sliver keeps at least one pixel
        ((1000, 3), (10, 10), "scale", (10, 1)),
        ((3, 1000), (10, 10), "crop", (3, 10)),
    ],
)
def test_thumbnail_sizes(
    tmp_path: Path,
    fmt: str,
    source: tuple[int, int],
    box: tuple[int, int],
    method: str,
    expected: tuple[int, int],
) -> None:
    path = _write(tmp_path / "src", _noise(source), fmt)

    thumb = make_thumbnail(path, *box, method, LIMIT)

    assert thumb is not None
    assert (thumb.width, thumb.height) == expected
    assert thumb.content_type == ("image/jpeg" if fmt == "JPEG" else "image/png")
    _decode(thumb)


@pytest.mark.parametrize("method", ["scale", "crop"])
@pytest.mark.parametrize("box", [(300, 200), (640, 480), (300, 1000), (1000, 200)])
def test_an_image_that_fits_is_served_as_is(
    tmp_path: Path, method: str, box: tuple[int, int]
) -> None:
    path = _write(tmp_path / "small.png", Image.new("RGB", (300, 200), RED), "PNG")

    assert make_thumbnail(path, *box, method, LIMIT) is None


def test_crop_keeps_the_centre(tmp_path: Path) -> None:
    image = Image.new("RGB", (300, 100), RED)
    image.paste(GREEN, (100, 0, 200, 100))
    image.paste(BLUE, (200, 0, 300, 100))
    path = _write(tmp_path / "stripes.png", image, "PNG")

    thumb = make_thumbnail(path, 100, 100, "crop", LIMIT)

    assert thumb is not None
    out = _decode(thumb).convert("RGB")
    assert out.size == (100, 100)
    assert {out.getpixel((x, 50)) for x in (0, 50, 99)} == {GREEN}


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 200x100, left half red; rotated clockwise for display the red half is on top.
    image = Image.new("RGB", (200, 100), BLUE)
    image.paste(RED, (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _write(tmp_path / "sideways.jpg", image, "JPEG", exif=exif, quality=95)

    thumb = make_thumbnail(path, 50, 50, "scale", LIMIT)

    assert thumb is not None
    assert (thumb.width, thumb.height) == (25, 50)
    out = _decode(thumb).convert("RGB")
    assert "exif" not in out.info  # no second rotation by the client, no camera metadata
    top, bottom = out.getpixel((12, 5)), out.getpixel((12, 44))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_decides_whether_the_image_fits(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    path = _write(tmp_path / "sideways.jpg", Image.new("RGB", (200, 100), RED), "JPEG", exif=exif)

    assert make_thumbnail(path, 100, 200, "scale", LIMIT) is None  # displayed 100x200
    thumb = make_thumbnail(path, 200, 100, "crop", LIMIT)
    assert thumb is not None
    assert (thumb.width, thumb.height) == (100, 100)


# --- modes ---------------------------------------------------------------------------------


def test_png_keeps_alpha(tmp_path: Path) -> None:
    image = Image.new("RGBA", (200, 200), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 100, 200))
    path = _write(tmp_path / "alpha.png", image, "PNG")

    thumb = make_thumbnail(path, 50, 50, "scale", LIMIT)

    assert thumb is not None
    assert thumb.content_type == "image/png"
    out = _decode(thumb)
    assert out.mode == "RGBA"
    assert out.getpixel((5, 25)) == (0, 0, 0, 0)
    assert out.getpixel((45, 25)) == (255, 0, 0, 255)


def test_gif_transparency_becomes_png_alpha(tmp_path: Path) -> None:
    image = Image.new("P", (100, 100), 0)
    image.putpalette([*RED, *BLUE])
    image.paste(1, (50, 0, 100, 100))
    path = _write(tmp_path / "t.gif", image, "GIF", transparency=1)

    thumb = make_thumbnail(path, 20, 20, "scale", LIMIT)

    assert thumb is not None
    out = _decode(thumb)
    assert out.mode == "RGBA"
    assert out.getpixel((2, 10)) == (*RED, 255)
    alpha = out.getpixel((18, 10))
    assert isinstance(alpha, tuple) and alpha[3] == 0


def test_cmyk_jpeg_gives_an_rgb_jpeg(tmp_path: Path) -> None:
    path = _write(tmp_path / "print.jpg", Image.new("CMYK", (100, 100), (0, 255, 255, 0)), "JPEG")

    thumb = make_thumbnail(path, 10, 10, "crop", LIMIT)

    assert thumb is not None
    out = _decode(thumb)
    assert (out.format, out.mode) == ("JPEG", "RGB")


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "grey16.png", Image.new("I;16", (100, 100), 0x8000), "PNG")

    thumb = make_thumbnail(path, 10, 10, "scale", LIMIT)

    assert thumb is not None
    out = _decode(thumb)
    assert out.mode == "L"
    assert out.getpixel((5, 5)) == 0x80


def test_icc_profile_is_kept(tmp_path: Path) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = _write(tmp_path / "p.jpg", _noise((100, 100)), "JPEG", icc_profile=profile)

    thumb = make_thumbnail(path, 10, 10, "scale", LIMIT)

    assert thumb is not None
    assert _decode(thumb).info.get("icc_profile") == profile


# --- refusals ------------------------------------------------------------------------------


def _truncated(path: Path, fmt: str, keep: float) -> Path:
    buffer = io.BytesIO()
    _noise((300, 200)).save(buffer, fmt)
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, this is not an image\n" * 10,
        random.Random(7).randbytes(4096),
        b"\xff\xd8\xff",  # a JPEG signature and nothing else
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    ],
    ids=["empty", "text", "random", "jpeg-magic", "png-magic", "gif-magic", "webp-magic"],
)
def test_junk_is_not_an_image(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.png"
    path.write_bytes(content)

    with pytest.raises(NotAnImage):
        probe_image(path, LIMIT)
    with pytest.raises(NotAnImage):
        make_thumbnail(path, 32, 32, "crop", LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_truncated_image_is_not_an_image(tmp_path: Path, fmt: str) -> None:
    path = _truncated(tmp_path / "cut", fmt, keep=0.5)

    # The header survives, so a probe may pass; decoding must fail cleanly.
    with pytest.raises(NotAnImage):
        make_thumbnail(path, 32, 32, "scale", LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_image_cut_inside_its_header_is_not_an_image(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "cut"
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), RED).save(buffer, fmt)
    path.write_bytes(buffer.getvalue()[:20])

    with pytest.raises(NotAnImage):
        probe_image(path, LIMIT)


def test_missing_file_is_an_os_error_not_a_verdict(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe_image(tmp_path / "nope", LIMIT)


def test_too_many_pixels(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.png", Image.new("RGB", (200, 200), RED), "PNG")

    assert probe_image(path, 40_000).width == 200
    with pytest.raises(ImageTooLarge):
        probe_image(path, 39_999)
    with pytest.raises(ImageTooLarge):
        make_thumbnail(path, 10, 10, "scale", 39_999)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(_png_claiming(100_000, 100_000), id="png-beyond-pillow-error-limit"),
        pytest.param(_png_claiming(10_000, 10_000), id="png-beyond-pillow-warning-limit"),
        pytest.param(_webp_claiming(16_384, 16_384), id="webp-largest-canvas"),
        pytest.param(_webp_claiming(10_000, 10_000), id="webp-under-pillow-error-limit"),
    ],
)
def test_decompression_bomb_header_is_refused_quickly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bomb"
    path.write_bytes(content)
    assert len(content) < 200

    started = time.monotonic()
    with pytest.raises(ImageTooLarge):
        probe_image(path, LIMIT)
    with pytest.raises(ImageTooLarge):
        make_thumbnail(path, 32, 32, "scale", LIMIT)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("width", "height", "method"), [(0, 10, "scale"), (10, 0, "crop"), (10, 10, "stretch")]
)
def test_bad_arguments(tmp_path: Path, width: int, height: int, method: str) -> None:
    path = _write(tmp_path / "ok.png", Image.new("RGB", (100, 100), RED), "PNG")

    with pytest.raises(ValueError):
        make_thumbnail(path, width, height, method, LIMIT)


# --- property ------------------------------------------------------------------------------


def _round_half_up(value: Fraction) -> int:
    return max(1, math.floor(value + Fraction(1, 2)))


@settings(max_examples=50, deadline=None)
@given(
    source=st.tuples(st.integers(1, 400), st.integers(1, 400)),
    box=st.tuples(st.integers(1, 500), st.integers(1, 500)),
    method=st.sampled_from(["scale", "crop"]),
    fmt=st.sampled_from(["PNG", "JPEG"]),
)
def test_thumbnail_size_properties(
    tmp_path_factory: pytest.TempPathFactory,
    source: tuple[int, int],
    box: tuple[int, int],
    method: str,
    fmt: str,
) -> None:
    (src_w, src_h), (box_w, box_h) = source, box
    path = _write(tmp_path_factory.mktemp("prop") / "src", Image.new("RGB", source, RED), fmt)

    thumb = make_thumbnail(path, box_w, box_h, method, LIMIT)

    if src_w <= box_w and src_h <= box_h:
        assert thumb is None
        return
    assert thumb is not None
    width, height = thumb.width, thumb.height
    assert _decode(thumb).size == (width, height)
    assert width <= src_w and height <= src_h  # never upscaled
    assert width <= box_w and height <= box_h
    if method == "scale":
        assert width == box_w or height == box_h  # as large as fits
        # Aspect ratio within rounding of the shorter side (a sliver keeps one pixel).
        assert abs(width * src_h - height * src_w) <= max(src_w, src_h) / 2 or 1 in (width, height)
    else:
        factor = min(Fraction(1), max(Fraction(box_w, src_w), Fraction(box_h, src_h)))
        scaled = _round_half_up(src_w * factor), _round_half_up(src_h * factor)
        assert (width, height) == (min(box_w, scaled[0]), min(box_h, scaled[1]))


# -- snapping requested sizes to a ladder ----------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "method", "expected"),
    [
        (32, 32, "scale", (32, 32)),
        (1, 1, "scale", (32, 32)),
        (33, 32, "scale", (96, 96)),
        (320, 240, "scale", (320, 240)),
        (300, 200, "scale", (320, 240)),
        (320, 241, "scale", (640, 480)),
        (100, 400, "scale", (640, 480)),
        (1600, 1200, "scale", (1600, 1200)),
        (1601, 10, "scale", None),  # larger than the largest box: serve the original
        (10, 1201, "scale", None),
        (96, 96, "crop", (96, 96)),
        (1, 1, "crop", (32, 32)),
        (100, 50, "crop", (128, 64)),
        (33, 1000, "crop", (64, 1024)),
        (1490, 1471, "crop", (1600, 1600)),
        (1600, 1600, "crop", (1600, 1600)),
        (1601, 32, "crop", None),
        (32, 4096, "crop", None),
    ],
)
def test_requested_sizes_snap_up_to_the_ladder(
    width: int, height: int, method: str, expected: tuple[int, int] | None
) -> None:
    assert snap_thumbnail_size(width, height, method) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 4096),
    st.integers(1, 4096),
    st.sampled_from(["crop", "scale"]),
)
def test_snapped_sizes_are_few_and_never_smaller(width: int, height: int, method: str) -> None:
    """Every request maps to one of a bounded set of sizes, at least as large as asked."""
    snapped = snap_thumbnail_size(width, height, method)
    if snapped is None:
        assert width > 1600 or height > (1200 if method == "scale" else 1600)
        return
    assert snapped[0] >= width and snapped[1] >= height
    if method == "scale":
        assert snapped in SCALE_SIZES
    else:
        assert snapped[0] in CROP_SIDES and snapped[1] in CROP_SIDES


def test_snapping_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="method"):
        snap_thumbnail_size(32, 32, "stretch")
    with pytest.raises(ValueError, match="positive"):
        snap_thumbnail_size(0, 32, "crop")
