"""Training-time degradation of a face image, seeded, PIL only.

Lives outside ``train.py`` so the augmentation stream can be tested without the ``train``
extra (torch). The same ``(seed, epoch, index)`` RNG gives the same image: with
``blur_p == 0`` and ``photometric_p == 0`` no extra random numbers are drawn, so the stream
is exactly the one the earlier training stages used.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from pipeline.imaging import reencoded, side_size

RESAMPLERS = (
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
    Image.Resampling.BOX,
)


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of one draw; see docs/model.md, "Augmentation". Each field is also the trainer's
    command-line option of the same name (``--blur-p``), with this default and help."""

    crop_min_area: float = 0.6
    down_min: int = 96
    down_max: int = 256
    jpeg_min: int = 60
    jpeg_max: int = 95
    blur_p: float = field(default=0.0, metadata={"help": "probability of a Gaussian blur per draw"})
    blur_sigma_max: float = 1.5
    photometric_p: float = field(
        default=0.0,
        metadata={"help": "probability of a brightness/contrast/saturation jitter per draw"},
    )
    photometric_strength: float = 0.15
    grey_p: float = field(
        default=0.0, metadata={"help": "probability of turning a draw greyscale (kept as RGB)"}
    )


def augment(image: Image.Image, rng: random.Random, spec: AugmentSpec) -> Image.Image:
    """Random crop + scale jitter, random down-scale, optional Gaussian blur,
    brightness/contrast/saturation jitter and greyscale, horizontal flip, JPEG re-encode; RGB
    out."""
    width, height = image.size
    side = min(width, height)
    crop = max(16, round(side * math.sqrt(rng.uniform(spec.crop_min_area, 1.0))))
    cw = min(width, max(16, round(crop * rng.uniform(0.9, 1.1))))
    ch = min(height, crop)
    left = rng.randint(0, width - cw)
    top = rng.randint(0, height - ch)
    image = image.crop((left, top, left + cw, top + ch))
    target = rng.randint(spec.down_min, spec.down_max)
    if max(image.size) > target:
        image = image.resize(side_size(image.size, target, floor=8), rng.choice(RESAMPLERS))
    if spec.blur_p > 0 and rng.random() < spec.blur_p:
        sigma = rng.uniform(0.1, spec.blur_sigma_max)
        image = image.filter(ImageFilter.GaussianBlur(radius=sigma))
    if spec.photometric_p > 0 and rng.random() < spec.photometric_p:
        s = spec.photometric_strength
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(rng.uniform(1.0 - s, 1.0 + s))
    if spec.grey_p > 0 and rng.random() < spec.grey_p:
        image = ImageOps.grayscale(image).convert("RGB")
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    quality = rng.randint(spec.jpeg_min, spec.jpeg_max)
    subsampling = 2 if rng.random() < 0.8 else 0
    return reencoded(image, "JPEG", quality=quality, subsampling=subsampling)
