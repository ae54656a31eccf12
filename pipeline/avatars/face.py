"""Where the face and the eyes are in an avatar, and how far the eyes sit from StyleGAN's spot.

Face and eyes come from OpenCV's Haar cascades, which ship inside opencv-python-headless
(``cv2.data.haarcascades``): nothing is downloaded at run time, and detection costs a few
milliseconds on a CPU. The detector score is computed on the whole picture; the face box and
the eyes feed the face-aligned perceptual hash and the *eye offset* feature:

StyleGAN-family generators (and the FFHQ alignment they were trained on) put the eye centres at
fixed image coordinates, so on a generated avatar the eyes land on the same spot in every frame.
:func:`eye_offset` measures the distance of the detected eyes from that spot, as a fraction of
the picture's side: near 0 means "aligned exactly like FFHQ/StyleGAN output".

:func:`eye_offset` and :data:`CANONICAL_EYES` are pure; :class:`HaarFaceLocator` wraps OpenCV.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

CANONICAL_EYES: tuple[tuple[float, float], tuple[float, float]] = ((0.375, 0.475), (0.625, 0.475))
"""Eye centres (x, y as fractions of width and height) of an FFHQ-aligned portrait.

From the FFHQ alignment (``recreate_aligned_images`` in NVlabs/ffhq-dataset): the crop is a
square of side ``4 * eye_to_eye`` centred ``0.1 * eye_to_mouth`` below the eye midpoint, so
with ``eye_to_mouth ≈ eye_to_eye`` the eyes sit at x = 0.5 ± 0.125 and y ≈ 0.475. The shared
data's StyleGAN fakes measure close to this (see docs/benchmarks.md, avatar section).
"""

FACE_CASCADE = "haarcascade_frontalface_alt2.xml"
"""Face cascade file (from ``cv2.data.haarcascades``): alt2 scans ~1.4x faster than
``frontalface_default`` at this size and found as many faces and eyes on the shared data."""
DETECT_SIDE = 96
"""Longest side (pixels) of the grayscale copy the face cascade scans. The cascade's window is
20 px and searches start at 24 px, so at 96 px a face of ``MIN_FACE_FRACTION`` (38 px) is well
inside the cascade's reach; the cost of a scan grows with the square of this side (the former
512 px scan with the default cascade cost ~1.8x more CPU in all, eyes included, on the shared
data's 128-256 px avatars). 80 and 72 px were tried for speed (-0.5 / -0.9 ms per avatar)
and rejected: they lost the face on 5 of 77 real LFW/UTKFace avatars of the benchmark
sample."""
EYE_SIDE = 128
"""Width (pixels) the upper face region is shrunk to (never enlarged) before the eye cascade
runs. It is cut from the full-resolution (equalised) picture, so eyes keep ~25-50 px."""
MIN_FACE_FRACTION = 0.4
"""Smallest face searched, as a fraction of the picture's shorter side (an avatar's subject is
large: on the shared data the largest face spans 44-90% of the side; searching smaller faces
costs time and finds bystanders). 0.4 instead of the former 0.3 skips the three most costly
scan scales (-0.9 ms per avatar) and left 98.5% of the validation split's findings unchanged
(docs/benchmarks.md, avatar section)."""
SCALE_FACTOR = 1.1
"""Step between the face cascade's detection scales (smaller finds more, slower)."""
EYE_SCALE_FACTOR = 1.1
"""Step between the eye cascade's detection scales."""
FACE_NEIGHBORS = 4
"""``minNeighbors`` of the face cascade (overlapping hits needed to keep a face)."""
EYE_NEIGHBORS = 3
"""``minNeighbors`` of the eye cascade."""
EYE_MIN_FRACTION = 0.1
"""Smallest eye searched, as a fraction of the shrunk face region's width (never below 8 px)."""
EYE_MAX_FRACTION = 0.34
"""Largest eye searched, as a fraction of the shrunk face region's width. An eye spans about a
fifth of a face's width and the cascade's box, brow included, rarely more than a third; the
scales above that are scanned at a one-pixel step (OpenCV, scale > 2) and cost ~1 ms per
avatar. Was 0.5: two eyes are found on ~1 point fewer validation avatars, held-out AUC and
TPR did not drop (docs/model.md)."""


def _shrink(gray: np.ndarray, factor: float) -> np.ndarray:
    if factor >= 1.0:
        return gray
    height, width = gray.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class FaceFinding:
    """The most certain face of a picture and up to two eyes inside it.

    ``face_box`` is ``(x, y, w, h)`` in pixels of the picture given to
    :meth:`HaarFaceLocator.locate`; ``eyes_px`` are eye centres in the same pixels, left to
    right; ``eyes`` the same centres as fractions of width and height.
    """

    face_found: bool
    face_box: tuple[int, int, int, int] | None = None
    eyes_px: tuple[tuple[float, float], ...] = ()
    eyes: tuple[tuple[float, float], ...] = ()

    @classmethod
    def none(cls) -> FaceFinding:
        return cls(face_found=False)


def eye_offset(eyes: Sequence[tuple[float, float]]) -> float | None:
    """Mean distance of normalised eye centres from :data:`CANONICAL_EYES` (fraction of side).

    With two eyes, the left one (smaller x) is compared with the canonical left eye and the
    right with the right; a single eye is compared with the nearer canonical eye. None when no
    eye is known. Pure.
    """
    if not eyes:
        return None
    if len(eyes) >= 2:
        left, right = sorted((float(e[0]), float(e[1])) for e in eyes[:2])
        return (math.dist(left, CANONICAL_EYES[0]) + math.dist(right, CANONICAL_EYES[1])) / 2.0
    point = (float(eyes[0][0]), float(eyes[0][1]))
    return min(math.dist(point, c) for c in CANONICAL_EYES)


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name  # type: ignore[attr-defined]
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise FileNotFoundError(f"Haar cascade {path} missing (opencv-python-headless<5 ships it)")
    return classifier


class HaarFaceLocator:
    """Finds the most certain frontal face and its eyes with OpenCV Haar cascades.

    Construction loads two cascade files from the OpenCV package (raises FileNotFoundError if
    they are missing). ``locate`` is blocking CPU work (a few ms: the face scan runs at
    ``detect_side``); it is safe to call from several threads (each thread gets its own
    classifiers).
    """

    def __init__(
        self,
        detect_side: int = DETECT_SIDE,
        scale_factor: float = SCALE_FACTOR,
        eye_side: int = EYE_SIDE,
        eye_scale_factor: float = EYE_SCALE_FACTOR,
        face_cascade: str = FACE_CASCADE,
        min_face_fraction: float = MIN_FACE_FRACTION,
        eye_max_fraction: float = EYE_MAX_FRACTION,
    ) -> None:
        self._face_cascade = face_cascade
        self._min_face_fraction = min_face_fraction
        self._eye_max_fraction = eye_max_fraction
        self._eye_scale_factor = eye_scale_factor
        self._detect_side = detect_side
        self._eye_side = eye_side
        self._scale_factor = scale_factor
        self._local = threading.local()
        self._classifiers()

    def _classifiers(self) -> tuple[cv2.CascadeClassifier, cv2.CascadeClassifier]:
        pair: tuple[cv2.CascadeClassifier, cv2.CascadeClassifier] | None = getattr(
            self._local, "pair", None
        )
        if pair is None:
            pair = (
                _cascade(self._face_cascade),
                _cascade("haarcascade_eye.xml"),
            )
            self._local.pair = pair
        return pair

    def locate(self, image: Image.Image) -> FaceFinding:
        """The most certain face (most cascade hits, then largest) and up to two eyes of a picture.

        The face cascade scans a copy shrunk to ``detect_side``; the eye cascade scans the
        upper face region cut from the full-resolution picture and shrunk to ``eye_side``.
        Boxes and eye centres are returned in the pixels of ``image``.
        """
        width, height = image.size
        if width < 24 or height < 24:
            return FaceFinding.none()
        full = cv2.equalizeHist(np.asarray(image.convert("L"), dtype=np.uint8))
        factor = min(1.0, self._detect_side / max(width, height))
        gray = _shrink(full, factor)
        faces_cascade, eyes_cascade = self._classifiers()
        side = min(gray.shape[:2])
        faces, votes = faces_cascade.detectMultiScale2(
            gray,
            scaleFactor=self._scale_factor,
            minNeighbors=FACE_NEIGHBORS,
            minSize=(max(24, round(side * self._min_face_fraction)),) * 2,
        )
        if len(faces) == 0:
            return FaceFinding.none()
        ranked = zip(faces, np.asarray(votes).reshape(-1), strict=True)
        best = max(ranked, key=lambda fv: (int(fv[1]), int(fv[0][2]) * int(fv[0][3])))[0]
        fx, fy, fw, fh = (int(v) for v in best)
        inv = 1.0 / factor
        x0, y0 = min(width - 1, round(fx * inv)), min(height - 1, round(fy * inv))
        box = (x0, y0, min(width - x0, round(fw * inv)), min(height - y0, round(fh * inv)))
        eyes_px = tuple(self._eyes(full, eyes_cascade, box))
        eyes = tuple((ex / width, ey / height) for ex, ey in eyes_px)
        return FaceFinding(True, box, eyes_px, eyes)

    def _eyes(
        self,
        full: np.ndarray,
        cascade: cv2.CascadeClassifier,
        box: tuple[int, int, int, int],
    ) -> list[tuple[float, float]]:
        """Up to two eye centres in the upper part of the face box, one per half, left first."""
        fx, fy, fw, fh = box
        top = fy + fh // 8
        roi = full[top : fy + int(fh * 0.6), fx : fx + fw]
        if roi.size == 0 or roi.shape[1] < 8:
            return []
        factor = min(1.0, self._eye_side / roi.shape[1])
        small = _shrink(roi, factor)
        rw = small.shape[1]
        found = cascade.detectMultiScale(
            small,
            scaleFactor=self._eye_scale_factor,
            minNeighbors=EYE_NEIGHBORS,
            minSize=(max(8, int(rw * EYE_MIN_FRACTION)),) * 2,
            maxSize=(max(9, int(rw * self._eye_max_fraction)),) * 2,
        )
        inv_x = roi.shape[1] / rw
        inv_y = roi.shape[0] / small.shape[0]
        best: dict[int, tuple[int, float, float]] = {}
        for ex, ey, ew, eh in found:
            cx = fx + (float(ex) + float(ew) / 2.0) * inv_x
            cy = top + (float(ey) + float(eh) / 2.0) * inv_y
            half = 0 if cx < fx + fw / 2.0 else 1
            area = int(ew) * int(eh)
            if half not in best or area > best[half][0]:
                best[half] = (area, cx, cy)
        return [(best[h][1], best[h][2]) for h in sorted(best)]
