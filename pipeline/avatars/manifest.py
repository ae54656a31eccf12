"""Which ONNX file of a model folder a worker loads, and its calibrated thresholds.

Read from ``manifest.json`` alone (no onnxruntime), so a worker that does not run the avatar
stage can still give the decide stage the detector's threshold (pipeline/compose.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_DIR = Path(__file__).resolve().parent / "model"
FP32_MODEL_FILE = "detector.onnx"


@dataclass(frozen=True)
class ModelChoice:
    """One ONNX file of a model folder with the thresholds calibrated for it."""

    folder: Path
    model_file: str
    manifest: dict[str, Any]
    threshold: float
    cnn_threshold: float


def locate(model_path: Path | None) -> tuple[Path, str | None]:
    """``avatars.model_path`` as (folder, file): a folder, one ``.onnx`` file of a folder, or
    None for the shipped model; the file is None when the manifest's default applies."""
    if model_path is None:
        return MODEL_DIR, None
    if model_path.suffix == ".onnx":
        return model_path.parent, model_path.name
    return model_path, None


def choose(folder: Path, model_file: str | None = None) -> ModelChoice:
    """The file to load (``model_file``, else the manifest's ``model_file``, else
    ``detector.onnx``) and its thresholds: the manifest's ``variants`` entry for that file when
    there is one, else the top-level ones. Raises FileNotFoundError / KeyError for a missing or
    malformed manifest."""
    manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    chosen = model_file or str(manifest.get("model_file", FP32_MODEL_FILE))
    variant = manifest.get("variants", {}).get(chosen, {})
    threshold = float(variant.get("threshold", manifest["threshold"]))
    cnn_threshold = float(variant.get("cnn_threshold", manifest.get("cnn_threshold", threshold)))
    return ModelChoice(folder, chosen, manifest, threshold, cnn_threshold)
