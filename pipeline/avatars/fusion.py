"""Fuses the CNN's score with the face-geometry features into one calibrated probability.

StyleGAN-family generators put the eyes at fixed image coordinates (``face.eye_offset``), which
the whole-image CNN only partly sees after a random crop. A tiny logistic regression over
``[logit(cnn score), face found, two eyes found, log eye offset]`` adds that geometry. It is
fitted on the *validation* split only (``pipeline.avatars.evaluate --fit-fusion``) and shipped
as coefficients in ``manifest.json: fusion``; the detector applies it after the ONNX graph.
Pure numpy: no sklearn at run time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.avatars.face import FaceFinding, eye_offset

FEATURES: tuple[str, ...] = (
    "cnn_logit",
    "face_found",
    "two_eyes",
    "log_eye_offset",
)
"""Names of the feature columns, in order (documented in docs/model.md)."""

OFFSET_FLOOR = 0.005
"""Added to the eye offset before the log, so an exact hit stays finite (fraction of side)."""
MISSING_OFFSET = 0.3
"""Eye offset assumed when fewer than two eyes are found (fraction of side; the
``two_eyes`` column carries the difference)."""
LOGIT_CLIP = 1e-6


def geometry(finding: FaceFinding, size: tuple[int, int]) -> tuple[float, float, float]:
    """``(face_found, two_eyes, eye_offset or MISSING_OFFSET)`` of one picture.

    ``size`` is the (width, height) the finding was measured on; it is accepted so callers
    need not change when a size-dependent feature is added, and is unused today.
    """
    del size
    two = len(finding.eyes) >= 2
    offset = eye_offset(finding.eyes) if two else None
    return (
        float(finding.face_found),
        float(two),
        float(offset) if offset is not None else MISSING_OFFSET,
    )


def logit(probs: Sequence[float] | np.ndarray, clip: float = LOGIT_CLIP) -> np.ndarray:
    """log(p / (1 - p)) in float64 of probabilities clipped to [clip, 1 - clip]. Pure."""
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), clip, 1 - clip)
    return np.asarray(np.log(p / (1 - p)))


def feature_matrix(
    cnn_probs: Sequence[float] | np.ndarray, geometries: Sequence[Sequence[float]] | np.ndarray
) -> np.ndarray:
    """(N, len(FEATURES)) float64 design matrix from CNN probabilities and ``geometry`` rows."""
    z = logit(cnn_probs)
    g = np.asarray(geometries, dtype=np.float64).reshape(len(z), 3)
    offset = np.where(g[:, 1] > 0, g[:, 2], MISSING_OFFSET)
    return np.column_stack([z, g[:, 0], g[:, 1], np.log(offset + OFFSET_FLOOR)])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return out


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-penalised logistic regression by Newton steps on standardised columns.

    Returns ``(weights, bias, mean, scale)`` with ``p = sigmoid(((x - mean) / scale) @ w + b)``;
    the intercept is not penalised. Classes are weighted to equal total weight.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    n_pos, n_neg = max(1.0, y.sum()), max(1.0, (1 - y).sum())
    sample_w = np.where(y > 0, 0.5 / n_pos, 0.5 / n_neg) * len(y)
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0
    beta = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = _sigmoid(z @ beta)
        gradient = z.T @ (sample_w * (p - y)) + penalty * beta
        hessian = (z * (sample_w * p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return beta[:-1], float(beta[-1]), mean, scale


@dataclass(frozen=True)
class Fusion:
    """A fitted combiner: ``prob = sigmoid(((features - mean) / scale) @ weights + bias)``."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Fused probability per row of a ``feature_matrix``."""
        z = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(
            self.scale
        )
        return _sigmoid(z @ np.asarray(self.weights) + self.bias)

    def fuse(
        self, cnn_probs: Sequence[float], geometries: Sequence[Sequence[float]]
    ) -> list[float]:
        """Fused probabilities from CNN probabilities and ``geometry`` rows, in input order."""
        if len(cnn_probs) == 0:
            return []
        return [float(v) for v in self.probabilities(feature_matrix(cnn_probs, geometries))]

    def to_manifest(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "constants": {
                "offset_floor": OFFSET_FLOOR,
                "missing_offset": MISSING_OFFSET,
            },
        }

    @classmethod
    def of_model(cls, manifest: dict[str, Any]) -> Fusion | None:
        """The combiner of a model's ``manifest.json`` (its ``fusion`` block), None without one
        (then the CNN score is the shipped score)."""
        block = manifest.get("fusion")
        return None if block is None else cls.from_manifest(block)

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Fusion:
        """Raises ValueError when the manifest's feature list is not this module's."""
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"fusion features {data['features']} != {list(FEATURES)}")
        weights = tuple(float(v) for v in data["weights"])
        if not all(math.isfinite(v) for v in weights):
            raise ValueError("non-finite fusion weight")
        return cls(
            weights=weights,
            bias=float(data["bias"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
        )

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, l2: float = 1.0) -> Fusion:
        w, b, mean, scale = fit_logistic(features, labels, l2)
        return cls(tuple(map(float, w)), b, tuple(map(float, mean)), tuple(map(float, scale)))
