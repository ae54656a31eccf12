"""The safe decoder against a corpus of hostile files made here: each refused with its code."""

from __future__ import annotations

import io
import re
import time
import tracemalloc
from pathlib import Path

import pytest
from hostile import corpus
from PIL import Image, ImageOps

from pipeline.avatars.decode import decode_image, sniff_format
from pipeline.avatars.errors import REFUSAL_CODES, AvatarRefused

MAX_PIXELS = 40_000_000


def refusal(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    with pytest.raises(AvatarRefused) as info:
        decode_image(data, max_pixels)
    assert info.value.code in REFUSAL_CODES
    return info.value.code


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: b"", "empty"),
        (corpus.truncated_jpeg, "truncated"),
        (corpus.truncated_png, "truncated"),
        (lambda: corpus.jpeg(32)[:40], "truncated"),
        (corpus.png_bomb, "too_many_pixels"),
        (lambda: corpus.png_bomb(8000, 8000), "too_many_pixels"),
        (lambda: corpus.jpeg_claiming(30_000, 30_000), "too_many_pixels"),
        (lambda: corpus.SVG_AS_JPEG, "not_an_image"),
        (lambda: corpus.HTML_AS_JPEG, "not_an_image"),
        (lambda: b"\x00" * 1000, "not_an_image"),
        (lambda: b"just some text", "not_an_image"),
        (lambda: corpus.encode(corpus.noise_image(8), "BMP"), "format_not_allowed"),
        (lambda: corpus.encode(corpus.noise_image(8), "TIFF"), "format_not_allowed"),
        (lambda: b"\xff\xd8\xff" + b"\x00" * 50, "decode_failed"),
        (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "decode_failed"),
    ],
)
def test_hostile_files_are_refused_with_their_code(make: object, code: str) -> None:
    assert refusal(make()) == code  # type: ignore[operator]


def test_explicit_pixel_limit_applies_below_pillows_own() -> None:
    data = corpus.encode(Image.new("RGB", (300, 200)), "PNG")
    assert decode_image(data, 60_000).width == 300
    assert refusal(data, max_pixels=59_999) == "too_many_pixels"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_allowed_formats_decode_to_rgb(fmt: str) -> None:
    image = corpus.noise_image(48).convert("P" if fmt == "GIF" else "RGB")
    decoded = decode_image(corpus.encode(image, fmt), MAX_PIXELS)
    assert decoded.format == fmt
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (48, 48) == (decoded.width, decoded.height)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK", "1"])
def test_colour_modes_are_normalised_to_rgb(mode: str) -> None:
    image = corpus.noise_image(16).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = image.convert("I").point(lambda v: v * 256).convert("I;16")
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(corpus.encode(image, fmt), MAX_PIXELS)
    assert decoded.image.mode == "RGB" and decoded.image.size == (16, 16)


def test_transparency_goes_onto_white() -> None:
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    decoded = decode_image(corpus.encode(clear, "PNG"), MAX_PIXELS)
    assert decoded.image.getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    decoded = decode_image(corpus.exif_rotated_jpeg(), MAX_PIXELS)
    assert decoded.image.size == (20, 40)
    assert (decoded.width, decoded.height) == (20, 40)
    top = decoded.image.getpixel((10, 5))
    bottom = decoded.image.getpixel((10, 35))
    assert top[2] > 200 and top[0] < 60, top
    assert bottom[0] > 200 and bottom[2] < 60, bottom


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation: int, fmt: str) -> None:
    picture = Image.new("RGB", (40, 20), (255, 0, 0))
    picture.paste((0, 0, 255), (0, 0, 20, 20))
    picture.paste((0, 255, 0), (30, 10, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = corpus.encode(picture, fmt, exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as opened:
        expected = (ImageOps.exif_transpose(opened) or opened).convert("RGB")
    decoded = decode_image(data, MAX_PIXELS)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == expected.size
    assert (decoded.width, decoded.height) == expected.size
    assert decoded.image.tobytes() == expected.tobytes()
    assert decoded.image.copy().tobytes() == expected.tobytes()


def test_thousand_frame_gif_decodes_only_the_first_frame_quickly() -> None:
    data = corpus.gif_frames(1000)
    t0 = time.perf_counter()
    decoded = decode_image(data, MAX_PIXELS)
    elapsed = time.perf_counter() - t0
    assert decoded.format == "GIF" and decoded.image.size == (32, 32)
    first = Image.open(__import__("io").BytesIO(data)).convert("RGB")
    assert decoded.image.tobytes() == first.tobytes()
    assert elapsed < 0.25


def test_large_jpeg_is_shrunk_while_decoding() -> None:
    data = corpus.encode(corpus.noise_image(3000, seed=4), "JPEG", quality=80)
    decoded = decode_image(data, MAX_PIXELS, max_side=1024)
    assert (decoded.width, decoded.height) == (3000, 3000)
    assert max(decoded.image.size) < 3000
    assert decoded.scale == pytest.approx(3000 / decoded.image.width)


def _rss_peak_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "make",
    [
        corpus.png_bomb,
        lambda: corpus.jpeg_claiming(30_000, 30_000),
        lambda: corpus.png_bomb(8000, 8000),
    ],
)
def test_bombs_are_refused_with_bounded_memory(make: object) -> None:
    data = make()  # type: ignore[operator]
    assert len(data) < 100_000
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_peak_kib()
    tracemalloc.start()
    try:
        assert refusal(data) == "too_many_pixels"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    assert _rss_peak_kib() - base < 16 * 1024


def test_sniffing_knows_only_the_allowed_formats() -> None:
    assert sniff_format(corpus.jpeg(8)) == "JPEG"
    assert sniff_format(corpus.encode(corpus.noise_image(8), "WEBP")) == "WEBP"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_format(corpus.SVG_AS_JPEG) is None
