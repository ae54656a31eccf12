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

DETECT_SIDE = 512
"""Pictures are shrunk to this side (pixels) before the cascades run."""
MIN_FACE_FRACTION = 0.25
"""Smallest face searched, as a fraction of the picture's shorter side (an avatar's subject is
large; searching smaller faces doubles the time and finds bystanders)."""
SCALE_FACTOR = 1.1
"""Step between the cascade's detection scales (smaller finds more, slower)."""


@dataclass(frozen=True)
class FaceFinding:
    """The largest face of a picture and up to two eyes inside it.

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
    """Finds the largest frontal face and its eyes with OpenCV Haar cascades.

    Construction loads two cascade files from the OpenCV package (raises FileNotFoundError if
    they are missing). ``locate`` is blocking CPU work (~5-20 ms at 512 px); it is safe to call
    from several threads (each thread gets its own classifiers).
    """

    def __init__(self, detect_side: int = DETECT_SIDE, scale_factor: float = SCALE_FACTOR) -> None:
        self._detect_side = detect_side
        self._scale_factor = scale_factor
        self._local = threading.local()
        self._classifiers()

    def _classifiers(self) -> tuple[cv2.CascadeClassifier, cv2.CascadeClassifier]:
        pair: tuple[cv2.CascadeClassifier, cv2.CascadeClassifier] | None = getattr(
            self._local, "pair", None
        )
        if pair is None:
            pair = (
                _cascade("haarcascade_frontalface_default.xml"),
                _cascade("haarcascade_eye.xml"),
            )
            self._local.pair = pair
        return pair

    def locate(self, image: Image.Image) -> FaceFinding:
        """The largest face and up to two eyes of an RGB (or L) picture."""
        width, height = image.size
        if width < 24 or height < 24:
            return FaceFinding.none()
        factor = min(1.0, self._detect_side / max(width, height))
        small = image.convert("L")
        if factor < 1.0:
            small = small.resize(
                (max(1, round(width * factor)), max(1, round(height * factor))),
                Image.Resampling.BILINEAR,
                reducing_gap=2.0,
            )
        gray = cv2.equalizeHist(np.asarray(small, dtype=np.uint8))
        faces_cascade, eyes_cascade = self._classifiers()
        side = min(gray.shape[:2])
        faces = faces_cascade.detectMultiScale(
            gray,
            scaleFactor=self._scale_factor,
            minNeighbors=5,
            minSize=(max(20, round(side * MIN_FACE_FRACTION)),) * 2,
        )
        if len(faces) == 0:
            return FaceFinding.none()
        fx, fy, fw, fh = (int(v) for v in max(faces, key=lambda f: int(f[2]) * int(f[3])))
        eyes_small = self._eyes(gray, eyes_cascade, fx, fy, fw, fh, self._scale_factor)
        inv = 1.0 / factor
        box = (
            round(fx * inv),
            round(fy * inv),
            min(width, round(fw * inv)),
            min(height, round(fh * inv)),
        )
        eyes_px = tuple((ex * inv, ey * inv) for ex, ey in eyes_small)
        eyes = tuple((ex / width, ey / height) for ex, ey in eyes_px)
        return FaceFinding(True, box, eyes_px, eyes)

    @staticmethod
    def _eyes(
        gray: np.ndarray,
        cascade: cv2.CascadeClassifier,
        fx: int,
        fy: int,
        fw: int,
        fh: int,
        scale_factor: float,
    ) -> list[tuple[float, float]]:
        """Up to two eye centres in the upper part of the face box, one per half, left first."""
        top = fy + fh // 8
        roi = gray[top : fy + int(fh * 0.6), fx : fx + fw]
        if roi.size == 0:
            return []
        found = cascade.detectMultiScale(
            roi,
            scaleFactor=scale_factor,
            minNeighbors=4,
            minSize=(max(8, fw // 10),) * 2,
            maxSize=(max(9, fw // 2),) * 2,
        )
        best: dict[int, tuple[int, float, float]] = {}
        for ex, ey, ew, eh in found:
            cx = fx + float(ex) + float(ew) / 2.0
            cy = top + float(ey) + float(eh) / 2.0
            half = 0 if cx < fx + fw / 2.0 else 1
            area = int(ew) * int(eh)
            if half not in best or area > best[half][0]:
                best[half] = (area, cx, cy)
        return [(best[h][1], best[h][2]) for h in sorted(best)]
