"""Face and eyes on real photos from the shared data, none on noise; the eye-offset feature."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from hostile import corpus

from pipeline.avatars.decode import decode_image
from pipeline.avatars.face import CANONICAL_EYES, HaarFaceLocator, eye_offset

PHOTOS = [
    "real/lfw_real_1001.jpg",
    "real/amfd_NF-1003.jpg",
    "real/celeba_000001.jpg",
    "fake/sdp_people1642675877.jpg",
    "fake/rvf_002KDWZBHU.jpg",
]


@pytest.fixture(scope="module")
def locator() -> HaarFaceLocator:
    return HaarFaceLocator()


@pytest.fixture(scope="module")
def faces(shared_dir: Path) -> Path:
    return shared_dir / "data" / "faces"


@pytest.mark.parametrize("name", PHOTOS)
def test_finds_a_face_and_two_eyes_on_real_photos(
    locator: HaarFaceLocator, faces: Path, name: str
) -> None:
    decoded = decode_image((faces / name).read_bytes(), 40_000_000)
    found = locator.locate(decoded.image)
    assert found.face_found and found.face_box is not None
    x, y, w, h = found.face_box
    width, height = decoded.image.size
    assert x >= 0 and y >= 0 and x + w <= width + 1 and y + h <= height + 1
    assert w >= min(width, height) // 8
    assert len(found.eyes) == 2 and len(found.eyes_px) == 2
    (lx, ly), (rx, ry) = found.eyes_px
    assert x <= lx < x + w / 2 <= rx <= x + w
    assert y <= ly <= y + h * 0.6 and y <= ry <= y + h * 0.6
    for (fx, fy), (px, py) in zip(found.eyes, found.eyes_px, strict=True):
        assert fx == pytest.approx(px / width) and fy == pytest.approx(py / height)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_no_face_on_noise(locator: HaarFaceLocator, seed: int) -> None:
    found = locator.locate(corpus.noise_image(256, seed=seed))
    assert not found.face_found and found.face_box is None and found.eyes == ()


def test_tiny_images_have_no_face(locator: HaarFaceLocator) -> None:
    assert not locator.locate(corpus.noise_image(16)).face_found


def test_stylegan_faces_sit_closer_to_the_canonical_eye_spot(
    locator: HaarFaceLocator, faces: Path
) -> None:
    def offsets(pattern: str) -> list[float]:
        out = []
        for path in sorted(faces.glob(pattern))[:15]:
            found = locator.locate(decode_image(path.read_bytes(), 40_000_000).image)
            value = eye_offset(found.eyes)
            if len(found.eyes) == 2 and value is not None:
                out.append(value)
        assert len(out) >= 5, pattern
        return out

    fakes = statistics.median(offsets("fake/rvf_*"))
    lfw = statistics.median(offsets("real/lfw_*"))
    assert fakes < 0.03 < lfw


def test_eye_offset_is_zero_on_the_canonical_spot_and_order_free() -> None:
    left, right = CANONICAL_EYES
    assert eye_offset([left, right]) == 0.0
    assert eye_offset([right, left]) == 0.0
    assert eye_offset([]) is None
    moved = eye_offset([(left[0] + 0.03, left[1] + 0.04), (right[0], right[1])])
    assert moved == pytest.approx(0.025)
    assert eye_offset([(right[0], right[1] + 0.1)]) == pytest.approx(0.1)
    assert eye_offset([(0.5, 0.5), (0.1, 0.1), (0.9, 0.9)]) == eye_offset([(0.1, 0.1), (0.5, 0.5)])
