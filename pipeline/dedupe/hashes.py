"""Perceptual hashes of one decoded avatar: the fingerprints the dedupe index matches on.

Pure (Pillow, numpy, imagehash, pdqhash; no I/O). The avatar stage calls
:func:`compute_hashes` once per decoded avatar and ships the result in
``AvatarResult.hashes``; the dedupe stage and the ``unmask hash`` command use the same function,
so a stored hash and a query hash always come from the same code.

Hash kinds (hex strings, most significant bit first):

``phash`` / ``phash_mirror``
    64-bit DCT pHash (imagehash) of the whole image and of its mirror image.
``phash_crop5`` / ``phash_crop10`` (and ``_mirror``)
    64-bit pHash of the centre of the picture with 5% and 10% of each side cut away, and of their
    mirrors: stored kinds that bring a cropped copy's whole-picture pHash closer.
``pdq`` / ``pdq_mirror``
    256-bit PDQ of the whole image and of its mirror image.
``phash_trim`` / ``phash_trim_mirror``
    64-bit pHash of the picture with its uniform border cut away, and of its mirror (only when
    a border was found), so a framed or padded copy is compared as the picture it frames.
``phash_win<nn>`` (and ``_mirror``)
    64-bit pHash of 24 off-centre crop windows (:data:`CROP_WINDOWS`, cuts of 0-10% per axis
    at various places, chosen on held-out photos: docs/dedupe.md). A copy cropped up to 10%
    mostly lies within 4 bits of one of them, close enough to be a candidate for verification.
``phash_q<n>``
    64-bit pHash of 4 crop windows of 3% (:data:`QUERY_WINDOWS`) that are not indexed: a
    query searches with them at a small radius, so a crop that falls between the stored
    windows is still found (the query's window is near a stored window or the stored picture).
``thumb``
    Not a hash: a 128x128 grayscale JPEG of the picture, base64 (pipeline/dedupe/verify.py),
    kept so a loose candidate can be checked by keypoints and correlation.
``face`` / ``face_mirror``
    64-bit pHash of the face region aligned on the eyes (only when the avatar stage found a
    face). A crop, border, rotation or text overlay of the background leaves the aligned face
    nearly unchanged, which a global hash cannot promise.

Kinds are grouped into *families* that share one bit length and one index: a query hash of any
kind in a family is compared against stored hashes of every kind in the same family
(``phash`` against ``phash_mirror`` is how a flipped copy is caught).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import imagehash
import numpy as np
import pdqhash
from PIL import Image, ImageOps

from pipeline.dedupe.verify import encode_thumb

HASH_BITS: dict[str, int] = {
    "phash": 64,
    "phash_mirror": 64,
    "phash_trim": 64,
    "phash_trim_mirror": 64,
    "phash_crop5": 64,
    "phash_crop10": 64,
    "phash_crop5_mirror": 64,
    "phash_crop10_mirror": 64,
    "pdq": 256,
    "pdq_mirror": 256,
    "face": 64,
    "face_mirror": 64,
}
_STORED_WINDOWS: tuple[tuple[float, float, float, float], ...] = (
    (0.03, 0.5, 0.08, 0.25), (0.06, 0.0, 0.03, 0.5), (0.08, 0.75, 0.03, 0.5),
    (0.03, 0.5, 0.06, 1.0), (0.08, 0.25, 0.08, 0.75), (0.03, 1.0, 0.06, 0.5),
    (0.06, 1.0, 0.03, 0.0), (0.06, 0.0, 0.08, 0.25), (0.08, 0.75, 0.06, 1.0),
    (0.06, 0.0, 0.06, 1.0), (0.06, 0.5, 0.06, 0.0), (0.10, 1.0, 0.06, 1.0),
    (0.06, 0.0, 0.10, 0.5), (0.06, 0.5, 0.06, 1.0), (0.0, 0.5, 0.03, 0.5),
    (0.06, 1.0, 0.08, 0.25), (0.06, 0.5, 0.0, 0.5), (0.0, 0.5, 0.10, 0.5),
    (0.0, 0.5, 0.10, 0.0), (0.06, 1.0, 0.03, 1.0), (0.06, 1.0, 0.10, 0.0),
    (0.08, 0.25, 0.0, 0.5), (0.10, 0.5, 0.06, 0.0), (0.0, 0.5, 0.06, 0.0),
)
CROP_WINDOWS: dict[str, tuple[float, float, float, float]] = {
    f"phash_win{i:02d}": w for i, w in enumerate(_STORED_WINDOWS)
}
"""Off-centre crop windows hashed as stored kinds: ``kind -> (cut_x, pos_x, cut_y, pos_y)``,
each axis cut by a share of its side with the kept part at ``pos`` (0: flush left/top, 1:
flush right/bottom, 0.5: centred). Picked greedily, 24 of a 12x12 grid of axis cuts, for the
share of 600 crops (up to 10% per axis, random offset) of 200 photos outside the robustness
benchmark's originals whose pHash lies within 4 bits of a stored kind."""
QUERY_WINDOWS: dict[str, tuple[float, float, float, float]] = {
    "phash_q0": (0.03, 0.0, 0.03, 1.0), "phash_q1": (0.03, 1.0, 0.0, 0.5),
    "phash_q2": (0.03, 1.0, 0.03, 1.0), "phash_q3": (0.0, 0.5, 0.03, 0.0),
}
"""Crop windows hashed for the query side only (not indexed), picked the same way on top of
:data:`CROP_WINDOWS` for a search radius of 2 bits."""
HASH_BITS.update({k: 64 for k in CROP_WINDOWS})
HASH_BITS.update({f"{k}_mirror": 64 for k in CROP_WINDOWS})
HASH_BITS.update({k: 64 for k in QUERY_WINDOWS})
"""Bit length of every hash kind :func:`compute_hashes` may return."""

FAMILY: dict[str, str] = {
    "phash": "phash",
    "phash_mirror": "phash",
    "phash_trim": "phash",
    "phash_trim_mirror": "phash",
    "phash_crop5": "phash",
    "phash_crop10": "phash",
    "phash_crop5_mirror": "phash",
    "phash_crop10_mirror": "phash",
    "pdq": "pdq",
    "pdq_mirror": "pdq",
    "face": "face",
    "face_mirror": "face",
    **{k: "phash" for k in CROP_WINDOWS},
    **{f"{k}_mirror": "phash" for k in CROP_WINDOWS},
    **{k: "phash" for k in QUERY_WINDOWS},
}
"""Index family of every hash kind: kinds of one family are compared with each other."""

MIRROR_KINDS = frozenset({"phash_mirror", "phash_trim_mirror", "phash_crop5_mirror",
                          "phash_crop10_mirror", "pdq_mirror", "face_mirror",
                          *(f"{k}_mirror" for k in CROP_WINDOWS)})
"""Kinds computed on the mirror image."""

CENTRE_CROPS: dict[str, float] = {"phash_crop5": 0.05, "phash_crop10": 0.10}
"""Centred crops hashed as stored kinds: share of the width and of the height cut away."""
FACE_SIZE = 128
"""Side of the aligned face crop that is hashed, pixels."""
FACE_SIDE_PER_EYE_DISTANCE = 2.6
"""Side of the aligned face crop as a multiple of the distance between the eyes."""
FACE_DROP_PER_EYE_DISTANCE = 0.45
"""How far below the eye midpoint the crop centre sits, in eye distances."""
MAX_SIDE = 512
"""Larger images are shrunk to this side before hashing (both hashes resample far below it)."""
BORDER_TOLERANCE = 12
"""A border line may differ from its median colour by this much per channel (0-255 levels)."""
BORDER_UNIFORM_FRACTION = 0.98
"""Share of a line's pixels within :data:`BORDER_TOLERANCE` for the line to count as border."""
MAX_BORDER_FRACTION = 0.25
"""At most this share of the side is trimmed on each side."""
FACE_BOX_MARGIN = 1.1
"""Side of the face crop as a multiple of the larger face-box side when no eyes are known."""


def compute_hashes(
    image: Image.Image,
    face_box: tuple[int, int, int, int] | None = None,
    eyes: Sequence[tuple[float, float]] | None = None,
) -> dict[str, str]:
    """Every perceptual hash of ``image`` as ``{kind: hex}`` (and its ``thumb``, base64).

    ``image`` is a decoded picture (any mode; it is converted to RGB). ``face_box`` is
    ``(x, y, w, h)`` in image pixels and ``eyes`` the centres of the two eyes (any order), both as
    found by the avatar stage; the ``face`` kinds are returned only when a usable face region is
    given. Pure and deterministic: the same pixels give the same hashes. Raises ``ValueError``
    for an empty image. The raw-bytes sha256 is not computed here (the caller has the bytes).
    """
    if image.width < 1 or image.height < 1:
        raise ValueError("empty image")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    face = aligned_face(rgb, face_box, eyes)
    rgb = _bounded(rgb)
    mirror = ImageOps.mirror(rgb)
    out = {
        "phash": str(imagehash.phash(rgb)),
        "phash_mirror": str(imagehash.phash(mirror)),
        "pdq": pdq_hex(rgb),
        "pdq_mirror": pdq_hex(mirror),
    }
    for kind, cut in CENTRE_CROPS.items():
        out[kind] = str(imagehash.phash(centre_crop(rgb, cut)))
        out[f"{kind}_mirror"] = str(imagehash.phash(centre_crop(mirror, cut)))
    gray = rgb.convert("L")
    gray_mirror = ImageOps.mirror(gray)
    for kind, window in CROP_WINDOWS.items():
        out[kind] = window_phash(gray, window)
        out[f"{kind}_mirror"] = window_phash(gray_mirror, window)
    for kind, window in QUERY_WINDOWS.items():
        out[kind] = window_phash(gray, window)
    out["thumb"] = encode_thumb(rgb)
    trimmed = trim_border(rgb)
    if trimmed is not rgb:
        out["phash_trim"] = str(imagehash.phash(trimmed))
        out["phash_trim_mirror"] = str(imagehash.phash(ImageOps.mirror(trimmed)))
    if face is not None:
        out["face"] = str(imagehash.phash(face))
        out["face_mirror"] = str(imagehash.phash(ImageOps.mirror(face)))
    return out


def _bounded(image: Image.Image) -> Image.Image:
    side = max(image.width, image.height)
    if side <= MAX_SIDE:
        return image
    scale = MAX_SIDE / side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def centre_crop(image: Image.Image, cut: float) -> Image.Image:
    """The centre of ``image`` with ``cut`` of its width and of its height removed, half a side."""
    dx, dy = round(image.width * cut / 2), round(image.height * cut / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def window_box(size: tuple[int, int], window: tuple[float, float, float, float]
               ) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom; fractional pixels) of a crop window
    ``(cut_x, pos_x, cut_y, pos_y)`` of a picture of ``size``: ``cut`` of the side removed,
    the kept part at ``pos`` (0: flush left/top, 1: flush right/bottom)."""
    cut_x, pos_x, cut_y, pos_y = window
    dx, dy = size[0] * cut_x, size[1] * cut_y
    left, top = dx * pos_x, dy * pos_y
    return (left, top, left + size[0] - dx, top + size[1] - dy)


def window_phash(gray: Image.Image, window: tuple[float, float, float, float]) -> str:
    """pHash of a crop window of a grayscale picture (resampled straight from the box: the
    same as imagehash's pHash of the cropped picture, without the crop's rounding)."""
    small = gray.resize((32, 32), Image.Resampling.LANCZOS, box=window_box(gray.size, window))
    return str(imagehash.phash(small))


def trim_border(image: Image.Image) -> Image.Image:
    """``image`` without a uniform border on any side, or ``image`` itself when it has none.

    A side's outer lines are cut while each is uniform (:data:`BORDER_UNIFORM_FRACTION` of its
    pixels within :data:`BORDER_TOLERANCE` of its median) and of the outermost line's colour, up
    to :data:`MAX_BORDER_FRACTION` of the side. Mirror-symmetric: the mirror image is trimmed
    by the same amounts, left and right swapped. ``image`` is RGB.
    """
    a = np.asarray(image, dtype=np.int16)
    h, w = a.shape[:2]
    rows_uniform, rows_colour = _uniform_lines(a)
    cols_uniform, cols_colour = _uniform_lines(a.transpose(1, 0, 2))
    top = min(_border_lines(rows_uniform, rows_colour), int(h * MAX_BORDER_FRACTION))
    bottom = min(_border_lines(rows_uniform[::-1], rows_colour[::-1]), int(h * MAX_BORDER_FRACTION))
    left = min(_border_lines(cols_uniform, cols_colour), int(w * MAX_BORDER_FRACTION))
    right = min(_border_lines(cols_uniform[::-1], cols_colour[::-1]), int(w * MAX_BORDER_FRACTION))
    if top + bottom + left + right == 0:
        return image
    return image.crop((left, top, w - right, h - bottom))


def _uniform_lines(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    colour = np.median(a, axis=1)
    deviation = np.abs(a - colour[:, None, :]).max(axis=2)
    return (deviation <= BORDER_TOLERANCE).mean(axis=1) >= BORDER_UNIFORM_FRACTION, colour


def _border_lines(uniform: np.ndarray, colour: np.ndarray) -> int:
    if not uniform[0]:
        return 0
    border = uniform & (np.abs(colour - colour[0]).max(axis=1) <= BORDER_TOLERANCE)
    return len(border) if border.all() else int(np.argmin(border))


def pdq_hex(image: Image.Image) -> str:
    """The 256-bit PDQ hash of an RGB image, as 64 hex digits."""
    bits, _quality = pdqhash.compute(np.asarray(image, dtype=np.uint8))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def aligned_face(
    image: Image.Image,
    face_box: tuple[int, int, int, int] | None,
    eyes: Sequence[tuple[float, float]] | None,
) -> Image.Image | None:
    """The face cut out of ``image`` in a canonical frame, or None when no usable face is given.

    With two eyes the crop is rotated so the eyes are level and scaled by their distance, which
    makes it independent of the framing of the whole picture. With only a face box the crop is
    the box squared around its centre. Pixels outside the image are black.
    """
    if eyes is not None and len(eyes) >= 2:
        (x1, y1), (x2, y2) = sorted((float(e[0]), float(e[1])) for e in eyes[:2])
        dist = math.hypot(x2 - x1, y2 - y1)
        if dist >= 4.0:
            angle = math.atan2(y2 - y1, x2 - x1)
            cos, sin = math.cos(angle), math.sin(angle)
            side = FACE_SIDE_PER_EYE_DISTANCE * dist
            scale = side / FACE_SIZE
            mx, my = (x1 + x2) / 2.0, (y1 + y2) / 2.0
            cx = mx - sin * FACE_DROP_PER_EYE_DISTANCE * dist
            cy = my + cos * FACE_DROP_PER_EYE_DISTANCE * dist
            half = FACE_SIZE / 2.0
            # output (u, v) -> input: centre + R(angle) * scale * (u - half, v - half)
            a, b = cos * scale, -sin * scale
            d, e = sin * scale, cos * scale
            c = cx - a * half - b * half
            f = cy - d * half - e * half
            return image.transform(
                (FACE_SIZE, FACE_SIZE), Image.Transform.AFFINE, (a, b, c, d, e, f),
                resample=Image.Resampling.BILINEAR,
            )
    if face_box is not None:
        x, y, w, h = (int(v) for v in face_box)
        if w >= 8 and h >= 8:
            side = FACE_BOX_MARGIN * max(w, h)
            cx, cy = x + w / 2.0, y + h / 2.0
            box = (
                round(cx - side / 2), round(cy - side / 2),
                round(cx + side / 2), round(cy + side / 2),
            )
            return image.crop(box).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR)
    return None
