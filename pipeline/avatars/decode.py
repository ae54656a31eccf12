"""Decode untrusted avatar bytes into an RGB picture, or refuse them with a code (pure: Pillow).

The bytes come from anyone, so the decoder assumes the worst: a decompression bomb (a small
file declaring a huge canvas), a header lying about its size, a truncated stream, an HTML or
SVG page named ``.jpg``, a thousand-frame GIF. It therefore

* recognises the format by its magic bytes and opens only JPEG, PNG, WebP and GIF;
* reads the canvas size from the header and refuses it above ``max_pixels`` *before* any pixel
  is decoded (Pillow's own ``DecompressionBombError``/``Warning`` map to the same refusal);
* decodes only the first frame of an animation;
* lets libjpeg shrink large JPEGs while decoding (``draft``), so the working picture never
  needs more than about ``max_side``² pixels of memory beyond the compressed input;
* applies the EXIF orientation and normalises the colour mode to RGB (transparency onto white).

Every refusal is an :class:`~pipeline.avatars.errors.AvatarRefused`.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from struct import error as struct_error

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from pipeline.avatars.errors import AvatarRefused

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
"""Pillow format names that are decoded; everything else is refused."""

_TRANSPOSING_ORIENTATIONS = frozenset(range(2, 9))
"""EXIF orientation values that ``ImageOps.exif_transpose`` turns or flips (1 is upright)."""

DEFAULT_MAX_SIDE = 1024
"""Side the working picture is reduced to at most, pixels (JPEG shrinks while decoding)."""

_ALLOWED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
_OTHER_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
    (b"\xff\x4f\xff\x51", "JPEG2000"),
    (b"\x76\x2f\x31\x01", "EXR"),
    (b"qoif", "QOI"),
    (b"\x0a", "PCX"),
)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded avatar ready for the face step, the detector and the hashes.

    ``image`` is RGB, upright, at most ``max_side`` on its longer side when the decoder could
    shrink it (JPEG), else at its own size. ``width``/``height`` are the size of the upright
    picture as declared by the file; ``scale`` is ``width / image.width`` (1.0 when not shrunk).
    """

    image: Image.Image
    format: str
    width: int
    height: int
    scale: float


def sniff_format(data: bytes) -> str | None:
    """The allowed format the magic bytes announce, or None."""
    for magic, name in _ALLOWED_MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _refuse_unknown(data: bytes) -> AvatarRefused:
    if len(data) >= 12 and data[:4] == b"RIFF":
        return AvatarRefused("format_not_allowed", "RIFF container that is not WebP")
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavis"):
        return AvatarRefused("format_not_allowed", "HEIF/AVIF")
    for magic, name in _OTHER_IMAGE_MAGIC:
        if data.startswith(magic) and name != "PCX":
            return AvatarRefused("format_not_allowed", name)
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<"):
        kind = "SVG" if b"<svg" in data[:4096].lower() else "markup (HTML/XML)"
        return AvatarRefused("not_an_image", kind)
    return AvatarRefused("not_an_image", "unrecognised magic bytes")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    """``ImageOps.exif_transpose`` when the EXIF orientation asks for a turn or a flip, else the
    image itself (``exif_transpose`` would return a copy, which costs ~20% of a small decode)."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return ImageOps.exif_transpose(image) or image
    return image


def decode_image(data: bytes, max_pixels: int, max_side: int = DEFAULT_MAX_SIDE) -> DecodedImage:
    """Decode ``data`` (the raw avatar bytes) into an upright RGB :class:`DecodedImage`.

    Raises :class:`AvatarRefused` with code ``empty``, ``not_an_image``,
    ``format_not_allowed``, ``too_many_pixels``, ``truncated`` or ``decode_failed``; never any
    other exception for bad input. Pure and thread-safe (no global Pillow setting is changed).
    Time and memory are bounded by ``max_pixels`` (checked on the header before decoding) and
    by decoding only the first frame.
    """
    if not data:
        raise AvatarRefused("empty", "zero bytes")
    keep_open = False
    expected = sniff_format(data)
    if expected is None:
        raise _refuse_unknown(data)
    try:
        image = Image.open(io.BytesIO(data), formats=[expected])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise AvatarRefused("too_many_pixels", str(error)) from None
    except UnidentifiedImageError:
        raise AvatarRefused("decode_failed", f"{expected} header not readable") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct_error, zlib.error) as error:
        raise _decode_error(error) from None
    try:
        if image.format not in ALLOWED_FORMATS:
            raise AvatarRefused("format_not_allowed", str(image.format))
        width, height = image.size
        if width < 1 or height < 1:
            raise AvatarRefused("decode_failed", f"{width}x{height} canvas")
        if width * height > max_pixels:
            raise AvatarRefused("too_many_pixels", f"{width}x{height} > {max_pixels} pixels")
        if image.format == "JPEG" and max(width, height) > max_side:
            image.draft("RGB", (max_side, max_side))
        image.load()
        upright = _upright(image)
        rgb = _to_rgb(upright)
        rgb.load()
        keep_open = rgb is image
    except AvatarRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise AvatarRefused("too_many_pixels", str(error)) from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        struct_error,
        zlib.error,
        MemoryError,
    ) as error:
        raise _decode_error(error) from None
    finally:
        if not keep_open:
            image.close()
    declared_w, declared_h = (height, width) if _transposes(upright, image) else (width, height)
    scale = declared_w / rgb.width if rgb.width else 1.0
    return DecodedImage(rgb, expected, declared_w, declared_h, scale)


def _transposes(upright: Image.Image, original: Image.Image) -> bool:
    return (
        upright is not original
        and upright.size != original.size
        and (upright.size == (original.size[1], original.size[0]))
    )


def _decode_error(error: BaseException) -> AvatarRefused:
    text = str(error)
    lowered = text.lower()
    if "truncated" in lowered or isinstance(error, EOFError) or "premature end" in lowered:
        return AvatarRefused("truncated", text[:200])
    return AvatarRefused("decode_failed", f"{type(error).__name__}: {text[:200]}")
