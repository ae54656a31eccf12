"""The edits a stolen photo goes through before it is re-uploaded, as seeded image transforms.

Pure (Pillow only). The robustness benchmark and the unit tests apply exactly these edits, so
the recall figures in docs/dedupe.md name what they were measured against. Every transform
takes the image and a ``random.Random`` and returns a new RGB image; parameters are drawn from
the ranges the issue names (resize 0.25x-2x, JPEG quality 30-95, crop up to 10%, brightness and
contrast +-20%, rotation +-5 degrees, text overlay, border, and a combination).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from pipeline.imaging import reencoded

Transform = Callable[[Image.Image, random.Random], Image.Image]


def resize(image: Image.Image, rng: random.Random) -> Image.Image:
    """Scale both sides by a factor drawn from [0.25, 2.0] (half the draws below 1)."""
    factor = rng.uniform(0.25, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, 2.0)
    return resize_by(image, factor)


def resize_by(image: Image.Image, factor: float) -> Image.Image:
    size = (max(8, round(image.width * factor)), max(8, round(image.height * factor)))
    return image.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, rng: random.Random) -> Image.Image:
    """Re-encode as JPEG with a quality drawn from [30, 95]."""
    return jpeg_at(image, rng.randint(30, 95))


def jpeg_at(image: Image.Image, quality: int) -> Image.Image:
    return reencoded(image, "JPEG", quality=quality)


def crop(image: Image.Image, rng: random.Random) -> Image.Image:
    """Cut away up to 10% of the width and of the height, split at random between the sides."""
    return crop_fraction(image, rng.uniform(0.0, 0.10), rng.uniform(0.0, 0.10), rng)


def crop_fraction(image: Image.Image, fx: float, fy: float, rng: random.Random) -> Image.Image:
    w, h = image.size
    cut_x, cut_y = round(w * fx), round(h * fy)
    left = round(cut_x * rng.random())
    top = round(cut_y * rng.random())
    return image.convert("RGB").crop((left, top, left + w - cut_x, top + h - cut_y))


def mirror(image: Image.Image, rng: random.Random) -> Image.Image:
    """Flip left to right."""
    return ImageOps.mirror(image.convert("RGB"))


def brightness(image: Image.Image, rng: random.Random) -> Image.Image:
    """Scale brightness by a factor drawn from 0.8-0.9 or 1.1-1.2."""
    return ImageEnhance.Brightness(image.convert("RGB")).enhance(_plus_minus(rng, 0.1, 0.2))


def contrast(image: Image.Image, rng: random.Random) -> Image.Image:
    """Scale contrast by a factor drawn from 0.8-0.9 or 1.1-1.2."""
    return ImageEnhance.Contrast(image.convert("RGB")).enhance(_plus_minus(rng, 0.1, 0.2))


def rotate(image: Image.Image, rng: random.Random) -> Image.Image:
    """Rotate by 1-5 degrees either way, same canvas, corners filled black."""
    angle = rng.uniform(1.0, 5.0) * rng.choice((-1, 1))
    return image.convert("RGB").rotate(angle, resample=Image.Resampling.BILINEAR)


def text_overlay(image: Image.Image, rng: random.Random) -> Image.Image:
    """Write a caption in white with a dark outline across the lower part of the picture."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    size = max(10, out.height // 12)
    y = round(out.height * rng.uniform(0.75, 0.88))
    caption = rng.choice(("follow me!", "@real_account", "new pic <3", "DM for collab"))
    draw.text(
        (max(2, out.width // 20), y),
        caption,
        fill=(255, 255, 255),
        font_size=size,
        stroke_width=max(1, size // 10),
        stroke_fill=(0, 0, 0),
    )
    return out


def border(image: Image.Image, rng: random.Random) -> Image.Image:
    """Add a solid border 3-8% of the side wide on every side."""
    width = max(1, round(max(image.size) * rng.uniform(0.03, 0.08)))
    colour = rng.choice(((0, 0, 0), (255, 255, 255), (200, 30, 60)))
    return ImageOps.expand(image.convert("RGB"), border=width, fill=colour)


def combo(image: Image.Image, rng: random.Random) -> Image.Image:
    """Mirror, crop up to 5%, resize 0.5-1.5x, brightness +-10%, then JPEG 50-90."""
    out = mirror(image, rng)
    out = crop_fraction(out, rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.05), rng)
    out = resize_by(out, rng.uniform(0.5, 1.5))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.9, 1.1))
    return jpeg_at(out, rng.randint(50, 90))


def _plus_minus(rng: random.Random, low: float, high: float) -> float:
    return 1.0 + rng.uniform(low, high) * rng.choice((-1, 1))


TRANSFORMS: dict[str, Transform] = {
    "resize": resize,
    "jpeg": jpeg,
    "crop": crop,
    "mirror": mirror,
    "brightness": brightness,
    "contrast": contrast,
    "rotate": rotate,
    "text": text_overlay,
    "border": border,
    "combo": combo,
}
"""Every transform the robustness benchmark reports, by name."""
