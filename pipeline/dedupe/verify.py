"""Strict second look at a near candidate: is the query the same photo, cropped, rotated or
captioned?

Pure (numpy, OpenCV; no I/O). A global perceptual hash moves too far under a crop or a rotation
to tell those copies from distinct photos at any radius that keeps false matches rare, so the
index is searched loosely and each candidate is checked here. The check needs the pixels of
both photos: every photo carries a small grayscale thumbnail (``thumb`` kind of
:func:`pipeline.dedupe.hashes.compute_hashes`, a base64 JPEG, about 5 kB), so the stored side is
read from the database and nothing is re-fetched.

The check (:func:`verify`): ORB keypoints on both thumbnails, brute-force Hamming matching with a
cross check, a RANSAC affine fit between the two pictures' unit squares (a crop, a resize and a
small rotation are affine there), a plausibility bound on that fit (scale, rotation), then the
query is warped onto the stored picture and the two are compared by normalised correlation of
their high-pass images over the overlap. Distinct photos of aligned faces (generated faces put
the eyes at the same place) share keypoints at the eyes and pass the geometry; they fail the
correlation, which compares every pixel of the overlap. Measured in docs/dedupe.md.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

THUMB_SIDE = 128
"""Side of the square grayscale thumbnail kept per photo, pixels (aspect not kept)."""
THUMB_QUALITY = 90
"""JPEG quality of the stored thumbnail."""
ORB_SIDE = 256
"""The thumbnail is upscaled to this side before ORB (its pyramid and borders need room)."""
ORB_FEATURES = 200
"""Keypoints kept per picture."""
MAX_DESCRIPTOR_DISTANCE = 64
"""Matched ORB descriptors differ in at most this many of 256 bits."""
RANSAC_THRESHOLD = 0.01
"""Reprojection error of an inlier, in units of the picture side."""
MIN_SCALE, MAX_SCALE = 0.75, 1.33
"""Plausible scale of the affine fit along each axis (a crop of up to ~25% per side)."""
MAX_ROTATION_DEGREES = 10.0
"""Plausible rotation of the affine fit."""
NCC_SIDE = 64
"""Side at which the aligned pictures are correlated, pixels."""
MIN_OVERLAP = 0.5
"""The warped query must cover at least this share of the stored picture."""
PACK_VERSION = 1
"""Format version of :func:`pack_keypoints` values."""
_HEADER = "<BH"


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found: RANSAC inliers and correlation of the aligned pictures (0 when
    no plausible alignment was found)."""

    inliers: int
    ncc: float


@dataclass(frozen=True)
class VerifyRule:
    """When a verified candidate is the same photo: at least ``min_inliers`` geometric inliers
    and a high-pass correlation of at least ``min_ncc`` over the overlap."""

    min_inliers: int = 12
    min_ncc: float = 0.80

    def passes(self, v: Verification) -> bool:
        return v.inliers >= self.min_inliers and v.ncc >= self.min_ncc


@dataclass(frozen=True)
class Features:
    """ORB keypoints (unit-square coordinates), descriptors and the correlation image of one
    thumbnail."""

    points: np.ndarray
    descriptors: np.ndarray
    highpass: np.ndarray


def encode_thumb(image: Image.Image) -> str:
    """The ``thumb`` kind of ``image``: base64 of a THUMB_SIDE-square grayscale JPEG."""
    gray = np.asarray(image.convert("L"))
    small = cv2.resize(gray, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    if not ok:
        raise ValueError("thumbnail encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def decode_thumb(value: str) -> np.ndarray:
    """The grayscale thumbnail of a ``thumb`` value; raises ValueError when it is not one."""
    try:
        raw = np.frombuffer(base64.b64decode(value, validate=True), dtype=np.uint8)
    except (ValueError, TypeError) as exc:
        raise ValueError("thumb is not base64") from exc
    if raw.size == 0:
        raise ValueError("thumb is empty")
    try:
        img = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE)
    except cv2.error as exc:
        raise ValueError("thumb is not an image") from exc
    if img is None or img.shape != (THUMB_SIDE, THUMB_SIDE):
        raise ValueError("thumb is not a thumbnail")
    return img


@lru_cache(maxsize=1)
def _orb() -> cv2.ORB:
    orb: cv2.ORB = cv2.ORB_create(  # type: ignore[attr-defined]
        nfeatures=ORB_FEATURES, fastThreshold=10, edgeThreshold=15, patchSize=15)
    return orb


def features(thumb: np.ndarray, mirror: bool = False) -> Features:
    """Keypoints, descriptors and correlation image of a decoded thumbnail (or of its mirror)."""
    if mirror:
        thumb = np.ascontiguousarray(thumb[:, ::-1])
    big = cv2.resize(thumb, (ORB_SIDE, ORB_SIDE), interpolation=cv2.INTER_LINEAR)
    keypoints, descriptors = _orb().detectAndCompute(big, None)
    points: np.ndarray = np.zeros((0, 2), np.float32)
    if descriptors is None or not keypoints:
        descriptors = np.zeros((0, 32), np.uint8)
    else:
        points = np.array([k.pt for k in keypoints], np.float32) / np.float32(ORB_SIDE)
    return Features(points, descriptors, highpass(thumb))


def highpass(thumb: np.ndarray) -> np.ndarray:
    """The correlation image of a decoded thumbnail: NCC_SIDE square, minus its blur."""
    small = cv2.resize(thumb, (NCC_SIDE, NCC_SIDE), interpolation=cv2.INTER_AREA
                       ).astype(np.float32)
    out: np.ndarray = small - cv2.GaussianBlur(small, (0, 0), NCC_SIDE / 16)
    return out


def pack_keypoints(f: Features) -> bytes:
    """The keypoints and descriptors of ``f`` as bytes (``photos.orb``): a version byte, the
    count (uint16), the points (float32 pairs) and the descriptors (32 bytes each), little-endian.
    The correlation image is not kept: :func:`unpack_keypoints` recomputes it from the
    thumbnail (a fraction of a millisecond; ORB is the costly part)."""
    n = len(f.descriptors)
    return (struct.pack(_HEADER, PACK_VERSION, n) + f.points.astype("<f4").tobytes()
            + np.ascontiguousarray(f.descriptors, dtype=np.uint8).tobytes())


def unpack_keypoints(data: bytes, thumb: np.ndarray) -> Features:
    """The :class:`Features` of a thumbnail from its packed keypoints (:func:`pack_keypoints`)
    and the decoded thumbnail; raises ValueError when ``data`` is not such a value."""
    head = struct.calcsize(_HEADER)
    if len(data) < head:
        raise ValueError("keypoints value too short")
    version, n = struct.unpack_from(_HEADER, data)
    if version != PACK_VERSION or len(data) != head + n * (8 + 32):
        raise ValueError("not a packed keypoints value")
    points = np.frombuffer(data, "<f4", 2 * n, head).astype(np.float32).reshape(n, 2)
    descriptors = np.frombuffer(data, np.uint8, 32 * n, head + 8 * n).reshape(n, 32).copy()
    return Features(points, descriptors, highpass(thumb))


def cross_matches(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of two sets of 256-bit descriptors by Hamming distance:
    indexes into ``a``, into ``b`` and the distances (the first of equal neighbours wins, as
    OpenCV's cross-checked brute-force matcher; about twice as fast here)."""
    x, y = a.view(np.uint64), b.view(np.uint64)
    d = np.bitwise_count(x[:, None, 0] ^ y[None, :, 0]).astype(np.uint16)
    for k in range(1, 4):
        d += np.bitwise_count(x[:, None, k] ^ y[None, :, k])
    best_b = d.argmin(axis=1)
    best_a = d.argmin(axis=0)
    ia = np.nonzero(best_a[best_b] == np.arange(len(a)))[0]
    ib = best_b[ia]
    return ia, ib, d[ia, ib]


def verify(query: Features, stored: Features) -> Verification:
    """Align ``query`` onto ``stored`` and measure how well they agree (see module docstring)."""
    if len(query.descriptors) < 8 or len(stored.descriptors) < 8:
        return Verification(0, 0.0)
    ia, ib, dist = cross_matches(query.descriptors, stored.descriptors)
    close = dist <= MAX_DESCRIPTOR_DISTANCE
    if int(close.sum()) < 6:
        return Verification(0, 0.0)
    src = query.points[ia[close]]
    dst = stored.points[ib[close]]
    cv2.setRNGSeed(0)
    fit, mask = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC,
                                     ransacReprojThreshold=RANSAC_THRESHOLD, maxIters=500,
                                     confidence=0.99)
    if fit is None or mask is None:
        return Verification(0, 0.0)
    inliers = int(mask.sum())
    a = fit[:, :2]
    sx, sy = float(np.hypot(*a[:, 0])), float(np.hypot(*a[:, 1]))
    angle = abs(float(np.degrees(np.arctan2(a[1, 0], a[0, 0]))))
    if not (MIN_SCALE <= sx <= MAX_SCALE and MIN_SCALE <= sy <= MAX_SCALE
            and angle <= MAX_ROTATION_DEGREES):
        return Verification(inliers, 0.0)
    pixel_fit = fit.astype(np.float32).copy()
    pixel_fit[:, 2] = pixel_fit[:, 2] * NCC_SIDE + pixel_fit[:, :2].sum(axis=1) * 0.5 - 0.5
    size = (NCC_SIDE, NCC_SIDE)
    warped = cv2.warpAffine(query.highpass, pixel_fit, size, flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones_like(query.highpass), pixel_fit, size,
                           flags=cv2.INTER_LINEAR) > 0.999
    if cover.mean() < MIN_OVERLAP:
        return Verification(inliers, 0.0)
    x = warped[cover] - warped[cover].mean()
    y = stored.highpass[cover] - stored.highpass[cover].mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return Verification(inliers, float((x * y).sum()) / denom if denom > 0 else 0.0)
