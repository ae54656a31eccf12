"""The one image-to-tensor transform shared by detector training and inference.

Training (``pipeline.avatars.train``) and serving (``pipeline.avatars.detector``) must turn a
picture into exactly the same array, or the calibrated threshold means nothing. This module is
pure (numpy and Pillow only): no onnxruntime, no torch, no I/O beyond what the caller hands in.
The input size and normalisation are read from the model's ``manifest.json``, never hard-coded
at call sites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

RESAMPLE = Image.Resampling.BILINEAR
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class PreprocessSpec:
    """How to turn an image into the model's input.

    ``input_size`` is the side of the square input in pixels; ``mean`` and ``std`` are per RGB
    channel on the 0..1 scale (``x = (pixel / 255 - mean) / std``).
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> PreprocessSpec:
        """Read a manifest's ``input`` block; raises KeyError/ValueError if malformed."""
        block = manifest["input"]
        mean = tuple(float(v) for v in block["mean"])
        std = tuple(float(v) for v in block["std"])
        size = int(block["size"])
        if len(mean) != 3 or len(std) != 3 or size <= 0 or min(std) <= 0:
            raise ValueError(f"bad preprocessing block in manifest: {block!r}")
        return cls(input_size=size, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))

    def to_manifest(self) -> dict[str, Any]:
        """The ``input`` block written into ``manifest.json``."""
        return {
            "size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "NCHW",
            "channels": "RGB",
            "resize": "center square crop, bilinear (Pillow, reducing_gap=3.0)",
        }


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an RGB copy; transparent pixels are composited onto white, palettes expanded."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def center_square(image: Image.Image) -> Image.Image:
    """Crop the largest centred square (a no-op for square images)."""
    width, height = image.size
    side = min(width, height)
    if width == height:
        return image
    left = (width - side) // 2
    top = (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size`` x ``size`` RGB."""
    square = center_square(to_rgb(image))
    if square.size == (size, size):
        return square
    return square.resize((size, size), RESAMPLE, reducing_gap=REDUCING_GAP)


def _normaliser(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(spec.mean, dtype=np.float32) * np.float32(255.0)
    scale = np.float32(1.0) / (np.asarray(spec.std, dtype=np.float32) * np.float32(255.0))
    return mean, scale


def preprocess(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Turn one image of any mode and size into a float32 array of shape (3, S, S).

    Deterministic: the same image and spec always give the same bytes.
    """
    pixels = np.asarray(resize_square(image, spec.input_size), dtype=np.float32)
    mean, scale = _normaliser(spec)
    normalised = (pixels - mean) * scale
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def preprocess_batch(images: Sequence[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """:func:`preprocess` over a batch: float32 array of shape (N, 3, S, S), byte for byte the
    singles stacked (the same float32 operations, run once over the whole batch)."""
    size = spec.input_size
    pixels = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        pixels[i] = np.asarray(resize_square(image, size))
    mean, scale = _normaliser(spec)
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for c in range(3):
        np.subtract(pixels[..., c], mean[c], out=batch[:, c], dtype=np.float32)
        batch[:, c] *= scale[c]
    return batch
