"""pipeline.imaging.reencoded: one save-and-decode round trip, always RGB."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.imaging import reencoded, side_size


def _picture(mode: str) -> Image.Image:
    rng = np.random.default_rng(3)
    base = np.zeros((48, 64, 3), dtype=np.uint8)
    base[:, :, 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    base[:, :, 1] = np.linspace(0, 255, 48, dtype=np.uint8)[:, None]
    base[:, :, 2] = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    return Image.fromarray(base).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
def test_any_mode_comes_back_rgb_at_the_same_size(mode: str, fmt: str) -> None:
    out = reencoded(_picture(mode), fmt)
    assert out.mode == "RGB"
    assert out.size == (64, 48)


def test_lossless_round_trip_keeps_pixels_and_lossy_quality_orders_the_error() -> None:
    image = _picture("RGB")
    original = np.asarray(image, dtype=np.int16)
    assert np.array_equal(np.asarray(reencoded(image, "PNG"), dtype=np.int16), original)
    errors = [
        np.abs(np.asarray(reencoded(image, "JPEG", quality=q), dtype=np.int16) - original).mean()
        for q in (20, 60, 95)
    ]
    assert errors[0] > errors[1] > errors[2] > 0


def test_options_reach_the_encoder() -> None:
    image = _picture("RGB")
    full = reencoded(image, "JPEG", quality=90, subsampling=0)
    halved = reencoded(image, "JPEG", quality=90, subsampling=2)
    assert not np.array_equal(np.asarray(full), np.asarray(halved))


def test_side_size_scales_the_longer_side_and_keeps_the_aspect() -> None:
    assert side_size((200, 160), 96) == (96, 77)
    assert side_size((160, 200), 512) == (410, 512)
    assert side_size((1000, 10), 100) == (100, 1)
    assert side_size((1000, 10), 100, floor=8) == (100, 8)
