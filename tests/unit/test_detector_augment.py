"""The detector trainer's augmentation draw (``pipeline.avatars.augment``), without torch.

Uses one real face from the shared data (the ``shared_dir`` fixture), so the blur and the
colour jitter are checked on the kind of image they are meant for.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.avatars.augment import AugmentSpec, augment

DRAWS = 24


@pytest.fixture(scope="module")
def face(shared_dir: Path) -> Image.Image:
    files = sorted((shared_dir / "data" / "faces" / "real").glob("zoya_*"))
    assert files, "no real/zoya faces in the shared data"
    with Image.open(files[0]) as image:
        return image.convert("RGB")


def _draws(face: Image.Image, spec: AugmentSpec) -> list[np.ndarray]:
    return [
        np.asarray(augment(face, random.Random(f"7:0:{i}"), spec), dtype=np.float64)
        for i in range(DRAWS)
    ]


def _detail(pixels: np.ndarray) -> float:
    grey = pixels.mean(axis=2)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_same_seed_same_image_and_bounded_size(face: Image.Image) -> None:
    spec = AugmentSpec(blur_p=0.5, photometric_p=0.5)
    first, again = _draws(face, spec), _draws(face, spec)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(a.ndim == 3 and a.shape[2] == 3 and max(a.shape[:2]) <= 256 for a in first)
    assert len({a.tobytes() for a in first}) == DRAWS


def test_off_switches_draw_no_extra_random_numbers(face: Image.Image) -> None:
    states = []
    for spec in (AugmentSpec(), AugmentSpec(blur_sigma_max=9.0, photometric_strength=0.9)):
        rng = random.Random("7:0:0")
        augment(face, rng, spec)
        states.append(rng.getstate())
    assert states[0] == states[1]
    rng = random.Random("7:0:0")
    augment(face, rng, AugmentSpec(blur_p=1.0))
    assert rng.getstate() != states[0]


def test_blur_removes_detail(face: Image.Image) -> None:
    sharp = AugmentSpec(jpeg_min=95, jpeg_max=95, down_min=200, down_max=256)
    blurred = replace(sharp, blur_p=1.0, blur_sigma_max=2.0)
    detail_sharp = np.mean([_detail(a) for a in _draws(face, sharp)])
    detail_blurred = np.mean([_detail(a) for a in _draws(face, blurred)])
    assert detail_blurred < 0.8 * detail_sharp


def test_photometric_jitter_spreads_brightness(face: Image.Image) -> None:
    plain = AugmentSpec(jpeg_min=95, jpeg_max=95)
    jittered = replace(plain, photometric_p=1.0, photometric_strength=0.3)
    spread_plain = np.std([a.mean() for a in _draws(face, plain)])
    spread_jittered = np.std([a.mean() for a in _draws(face, jittered)])
    assert spread_jittered > 2.0 * spread_plain


def test_grey_draws_are_grey_and_off_draws_no_random_number(face: Image.Image) -> None:
    grey = [a for a in _draws(face, AugmentSpec(grey_p=1.0))]
    assert all(np.allclose(a[..., 0], a[..., 1], atol=3) for a in grey)
    assert all(np.allclose(a[..., 1], a[..., 2], atol=3) for a in grey)
    colour = _draws(face, AugmentSpec())
    assert not all(np.allclose(a[..., 0], a[..., 2], atol=3) for a in colour)
    off, on = random.Random("7:0:0"), random.Random("7:0:0")
    augment(face, off, AugmentSpec(grey_p=0.0))
    augment(face, on, AugmentSpec(grey_p=0.5))
    assert off.getstate() != on.getstate()
    again = random.Random("7:0:0")
    augment(face, again, AugmentSpec())
    assert again.getstate() == off.getstate()
