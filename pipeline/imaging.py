"""Small Pillow helpers shared by the stages, their benchmarks and the model tooling. Pure.

:func:`reencoded` is the one "save to bytes and decode again" step: training augmentation,
the held-out degradation, the stress report and the dedupe edits each used to carry a copy.
:func:`side_size` is the one "scale so the longer side is N" size rule.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image


def reencoded(image: Image.Image, fmt: str = "JPEG", **options: Any) -> Image.Image:
    """``image`` as RGB, saved in ``fmt`` with Pillow's save ``options`` and decoded again."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=fmt, **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def side_size(size: tuple[int, int], side: int, floor: int = 1) -> tuple[int, int]:
    """``(width, height)`` scaled so the longer side is ``side``, aspect kept, each at least
    ``floor`` pixels."""
    width, height = size
    scale = side / max(width, height)
    return max(floor, round(width * scale)), max(floor, round(height * scale))
