"""Files that try to hurt an image decoder: bombs, lies, truncations, disguises.

Every builder returns bytes (or writes a file) made here from scratch, so the corpus needs no
download and no binary fixture in the repository.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image


def noise_image(side: int = 256, seed: int = 0) -> Image.Image:
    """Uniform RGB noise: no face anywhere."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def jpeg(side: int = 64, color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    return encode(Image.new("RGB", (side, side), color), "JPEG", quality=90)


def truncated_jpeg() -> bytes:
    """A real JPEG cut off in the middle of its entropy-coded data."""
    data = encode(noise_image(256, seed=1), "JPEG", quality=90)
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = encode(noise_image(128, seed=2), "PNG")
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black: small file, huge canvas."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = []
    block = row * 256
    for start in range(0, height, 256):
        rows = min(256, height - start)
        parts.append(compressor.compress(block if rows == 256 else row * rows))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to claim ``width`` x ``height``."""
    data = bytearray(jpeg(16))
    at = data.find(b"\xff\xc0")
    if at < 0:
        raise ValueError("no SOF0 marker")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_frames(frames: int = 1000, side: int = 32) -> bytes:
    """An animated GIF of ``frames`` distinct frames."""
    images = [Image.new("P", (side, side), i % 256) for i in range(frames)]
    for i, im in enumerate(images):
        im.putpalette([(j * 7 + i) % 256 for j in range(768)])
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=10, loop=0)
    return out.getvalue()


SVG_AS_JPEG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<script>alert(1)</script><rect width="64" height="64"/></svg>\n'
)
HTML_AS_JPEG = b"<!DOCTYPE html>\n<html><head><title>404</title></head><body>nope</body></html>\n"


def exif_rotated_jpeg() -> bytes:
    """A 40x20 JPEG whose EXIF says 'rotate 90 CW' (orientation 6): upright it is 20x40."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def write_big_file(path: Path, size: int = 50 * 1024 * 1024) -> Path:
    """A ``size``-byte file that starts like a JPEG (sparse: costs no disk)."""
    with path.open("wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0")
        handle.truncate(size)
    return path
