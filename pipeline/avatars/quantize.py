"""Post-training static INT8 quantisation of the exported detector (a training-pipeline step).

The fp32 ``detector.onnx`` that ``unmask train-detector`` writes is turned into
``detector-int8.onnx``: QDQ format, int8 per-channel weights, uint8 per-tensor activations whose
ranges are calibrated (MinMax, or a percentile of a histogram: ``--calibration-method``) on a
fixed, hash-picked sample of TRAINING images only, half of them degraded as uploads are (q75 JPEG,
256 px), all through the same ``preprocess_batch`` as inference. The classifier head stays float,
and so do the nodes named by ``--keep-float``: which ones is measured, on validation images and
without labels, by ``--scan-float-units`` (``precision.py``: each unit's share of the INT8-fp32
score gap against its cost in scoring time; docs/model.md, "Mixed precision"). The calibrated
thresholds of the new file are then re-derived on the validation split exactly as the fp32 ones
were (1% FPR on validation reals, clean + degraded copies; the fused threshold with the manifest's
fusion coefficients), and recorded in ``manifest.json`` under ``variants``. Held-out sources are
never read here. ``--select FILE`` makes one recorded variant the file the runtime loads
(``model_file``) with its thresholds and metrics.

Needs ``onnx`` (the ``train`` extra) besides onnxruntime; the runtime only loads the result.
Run ``unmask quantize-detector --help``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pipeline.avatars import dataset as ds
from pipeline.avatars import evaluate as ev
from pipeline.avatars.face import HaarFaceLocator
from pipeline.avatars.fusion import Fusion, feature_matrix
from pipeline.avatars.preprocess import PreprocessSpec, preprocess_batch

FP32_FILE = "detector.onnx"
INT8_FILE = "detector-int8.onnx"
CALIBRATION_SALT = "int8-calibration"
CALIBRATION_PER_CLASS = 150


def calibration_batches(
    records: Sequence[ds.FaceRecord], spec: PreprocessSpec, batch: int = 32
) -> list[np.ndarray]:
    """Preprocessed float32 (N, 3, S, S) batches of ``records``; every second image is first
    degraded to q75 JPEG at 256 px (``evaluate.degrade``), so the activation ranges cover both
    clean uploads and the platform-recompressed copies the model scores in production."""
    images = [ds.load_image(r.path) for r in records]
    shown = [ev.degrade(im) if i % 2 else im for i, im in enumerate(images)]
    return [
        preprocess_batch(shown[start : start + batch], spec)
        for start in range(0, len(shown), batch)
    ]


def head_nodes(model_path: Path) -> list[str]:
    """Names of the nodes after the last ``GlobalAveragePool`` (flatten, the classifier, the
    output sigmoid): kept in float. Quantised, the output probability has 256 levels, so every
    score above ~0.998 became exactly 1.0 and the confident fakes and the hardest reals tied at
    the top (a held-out TPR @ 1% FPR 3 points below the fp32 file's, validation thresholds of
    1.0); the head is ~0.1 % of the model's multiply-adds."""
    nodes = _nodes(model_path)
    pools = [i for i, (_, op) in enumerate(nodes) if op == "GlobalAveragePool"]
    if not pools:
        return []
    return [name for name, op in nodes[pools[-1] + 1 :] if name and op != "Constant"]


def _nodes(model_path: Path) -> list[tuple[str, str]]:
    """``(name, op type)`` of every node of ``model_path``'s graph, in order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [(n.name, n.op_type) for n in graph.node]


CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile")
"""``--calibration-method`` choices, onnxruntime's ``CalibrationMethod`` names in lower case.
Not ``entropy``: through ``quantize_static`` its histogram has as many bins as the quantised
range (128), so its only candidate is the full range and it wrote exactly the MinMax scales."""


def equal_batches(batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The same images re-cut into batches of one size (the largest that divides their count,
    at most the first batch's): onnxruntime's histogram calibrator (percentile) stacks
    every batch's activations into one array and fails on a shorter last batch."""
    images = np.concatenate(list(batches))
    size = max(d for d in range(1, len(batches[0]) + 1) if len(images) % d == 0)
    return [images[start : start + size] for start in range(0, len(images), size)]


_METHOD_NAMES = {"minmax": "MinMax", "percentile": "Percentile"}


def float_nodes(model_path: Path, patterns: Sequence[str]) -> list[str]:
    """Names of the non-constant nodes of ``model_path`` whose name contains any of
    ``patterns`` (e.g. ``/stem/`` for the first convolution): kept in float by
    ``quantize_model``. A pattern that matches nothing is an error, so a typo cannot silently
    quantise what it meant to keep."""
    nodes = [name for name, op in _nodes(model_path) if name and op != "Constant"]
    unmatched = [p for p in patterns if not any(p in name for name in nodes)]
    if unmatched:
        raise ValueError(f"no node name contains {unmatched}")
    return [name for name in nodes if any(p in name for p in patterns)]


def quantize_model(
    fp32_path: Path,
    int8_path: Path,
    batches: Sequence[np.ndarray],
    input_name: str = "image",
    method: str = "minmax",
    keep_float: Sequence[str] = (),
    percentile: float = 99.999,
) -> dict[str, Any]:
    """Write the QDQ int8 model of ``fp32_path`` to ``int8_path``; returns the recipe for the
    manifest. Deterministic for the same inputs and onnxruntime version.

    ``method`` picks how activation ranges are calibrated: ``minmax`` (the observed extremes) or
    ``percentile`` (both tails cut so ``percentile`` % of the values stay inside, asymmetric, as
    the activations are uint8). Nodes whose names contain any of ``keep_float`` stay in float
    besides the head (``head_nodes``)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {CALIBRATION_METHODS}")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method != "minmax":
        batches = equal_batches(batches)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._left = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._left, None)
            return None if x is None else {input_name: x}

    prepared = int8_path.with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        head = head_nodes(prepared)
        kept = float_nodes(prepared, keep_float)
        extra: dict[str, Any] = {}
        if method == "percentile":
            extra = {"CalibTensorRangeSymmetric": False, "CalibPercentile": percentile}
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, _METHOD_NAMES[method]),
            nodes_to_exclude=head + [name for name in kept if name not in head],
            extra_options=extra,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return {
        "format": "QDQ (onnxruntime.quantization.quantize_static)",
        "weights": "int8, symmetric, per output channel",
        "activations": f"uint8, per tensor, {_METHOD_NAMES[method]}-calibrated"
        + (f" ({percentile} percentile)" if method == "percentile" else ""),
        "calibration_method": method,
        "float_head": head,
        "float_nodes": kept,
        "source_file": fp32_path.name,
        "onnxruntime": ort.__version__,
    }


def validation_thresholds(
    model_path: Path,
    spec: PreprocessSpec,
    records: Sequence[ds.FaceRecord],
    fusion: Fusion | None,
    target_fpr: float = 0.01,
) -> tuple[float, float, dict[str, Any]]:
    """(shipped threshold, CNN threshold, validation report) of ``model_path`` on validation
    ``records``: the score letting ``target_fpr`` of the reals through, clean and degraded copies
    pooled; the shipped one on the fused score when ``fusion`` is given, else equal to the CNN
    one. The report is ``evaluate.report_features`` at those thresholds."""
    labels = np.array([r.label for r in records])
    feats = ev.features(ev.OnnxScorer(model_path, spec), HaarFaceLocator(), records)
    cnn = np.concatenate([c for c, _ in feats.values()])
    y = np.concatenate([labels] * len(feats))
    cnn_threshold = ev.threshold_at_fpr(cnn[y == 0], target_fpr)
    threshold = cnn_threshold
    if fusion is not None:
        x = np.vstack([feature_matrix(c, g) for c, g in feats.values()])
        threshold = ev.threshold_at_fpr(fusion.probabilities(x)[y == 0], target_fpr)
    report = ev.report_features(records, feats, threshold, fusion, cnn_threshold)
    return threshold, cnn_threshold, report


def select(manifest: dict[str, Any], model_file: str) -> None:
    """Make the recorded variant ``model_file`` the one the runtime loads (in place)."""
    variant = manifest["variants"][model_file]
    manifest["model_file"] = model_file
    manifest["threshold"] = variant["threshold"]
    manifest["cnn_threshold"] = variant["cnn_threshold"]
    manifest["metrics"] = dict(variant.get("metrics", {}))
    manifest["metrics_model_file"] = model_file


def rename_version(manifest: dict[str, Any], version: str) -> None:
    """Give the model folder a new ``version`` (in place) when a new file changes the scores it
    serves while the weights stay: scored events carry the version, so the same version must
    not stand for two sets of scores. The weights' version stays as ``weights_version`` (kept
    from the first rename)."""
    if version == manifest["version"]:
        raise ValueError(f"{version!r} is already the version")
    manifest.setdefault("weights_version", manifest["version"])
    manifest["version"] = version


def ensure_variants(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``variants`` block, seeded on first use with the fp32 model's recorded thresholds and
    metrics (the manifest's own, written by training and ``evaluate --fit-fusion``)."""
    variants: dict[str, Any] = manifest.setdefault("variants", {})
    if FP32_FILE not in variants:
        variants[FP32_FILE] = {
            "quantization": None,
            "threshold": manifest["threshold"],
            "cnn_threshold": manifest.get("cnn_threshold", manifest["threshold"]),
            "metrics": dict(manifest.get("metrics", {})),
        }
    return variants


def main(argv: Sequence[str] | None = None) -> int:
    """Quantise, re-derive thresholds on validation, record the variant (or ``--select``)."""
    parser = argparse.ArgumentParser(prog="unmask quantize-detector", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=ev.MODEL_DIR)
    parser.add_argument("--shared-dir", default=None)
    parser.add_argument(
        "--calibration-per-class",
        type=int,
        default=CALIBRATION_PER_CLASS,
        help="training images per class used to calibrate activation ranges",
    )
    parser.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default="minmax",
        help="how activation ranges are calibrated",
    )
    parser.add_argument(
        "--calibration-percentile",
        type=float,
        default=99.999,
        help="with --calibration-method percentile: the share of values kept inside the range",
    )
    parser.add_argument(
        "--keep-float",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="also keep in float the nodes whose name contains this (repeatable), e.g. /stem/",
    )
    parser.add_argument(
        "--scan-float-units",
        action="store_true",
        help="quantise nothing into the model folder: measure on validation images (no labels) "
        "how much keeping each unit (stem, blocks.N, head) float narrows the INT8-fp32 logit gap, "
        "and print the greedy choice within --budget-ms as JSON (pipeline/avatars/precision.py)",
    )
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=0.8,
        help="with --scan-float-units: extra scoring milliseconds per image allowed over the "
        "base recipe (batch 32, one thread)",
    )
    parser.add_argument(
        "--version",
        default=None,
        help="new version of the model folder, for a new INT8 file of the same weights (the "
        "old one is kept as weights_version)",
    )
    parser.add_argument(
        "--select",
        default=None,
        metavar="FILE",
        help="only make this recorded variant (e.g. detector.onnx) the default; quantise nothing",
    )
    args = parser.parse_args(argv)
    manifest_path = args.model_dir / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    variants = ensure_variants(manifest)
    if args.select is not None:
        if args.select not in variants:
            parser.error(f"{args.select} is not a recorded variant: {sorted(variants)}")
        select(manifest, args.select)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"default model file: {args.select}")
        return 0

    spec = PreprocessSpec.from_manifest(manifest)
    split = ds.model_split(manifest["training"], args.shared_dir)
    calibration = ds.deterministic_sample(
        split.train, args.calibration_per_class, salt=CALIBRATION_SALT
    )
    if args.scan_float_units:
        from pipeline.avatars import precision

        images = [ds.load_image(r.path) for r in split.val]
        result = precision.scan(
            args.model_dir / FP32_FILE,
            calibration_batches(calibration, spec),
            images + [ev.degrade(im) for im in images],
            spec,
            keep_float=args.keep_float,
            budget_ms=args.budget_ms,
            input_name=str(manifest.get("input_name", "image")),
            quantize_options={
                "method": args.calibration_method,
                "percentile": args.calibration_percentile,
            },
        )
        print(json.dumps(result, indent=2))
        return 0
    t0 = time.monotonic()
    recipe = quantize_model(
        args.model_dir / FP32_FILE,
        args.model_dir / INT8_FILE,
        calibration_batches(calibration, spec),
        str(manifest.get("input_name", "image")),
        method=args.calibration_method,
        keep_float=args.keep_float,
        percentile=args.calibration_percentile,
    )
    recipe["calibration"] = {
        "split": "train (held-out sources never read)",
        "images": len(calibration),
        "per_class": args.calibration_per_class,
        "pick": f"dataset.deterministic_sample(salt={CALIBRATION_SALT!r})",
        "degraded": "every second image q75 JPEG at 256 px",
        "counts": ds.counts(calibration),
    }
    recipe["command"] = " ".join(
        ["unmask quantize-detector", f"--calibration-method {args.calibration_method}"]
        + (
            [f"--calibration-per-class {args.calibration_per_class}"]
            if args.calibration_per_class != CALIBRATION_PER_CLASS
            else []
        )
        + (
            [f"--calibration-percentile {args.calibration_percentile}"]
            if args.calibration_method == "percentile"
            else []
        )
        + [f"--keep-float {pattern}" for pattern in args.keep_float]
    )
    recipe["seconds"] = round(time.monotonic() - t0, 1)
    fusion = Fusion.of_model(manifest)
    threshold, cnn_threshold, validation = validation_thresholds(
        args.model_dir / INT8_FILE, spec, split.val, fusion
    )
    variants[INT8_FILE] = {
        "quantization": recipe,
        "threshold": threshold,
        "cnn_threshold": cnn_threshold,
        "threshold_rule": manifest.get("threshold_rule"),
        "bytes": (args.model_dir / INT8_FILE).stat().st_size,
        "metrics": {"validation": validation},
    }
    manifest.setdefault("model_file", FP32_FILE)
    if args.version is not None:
        rename_version(manifest, args.version)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({k: v for k, v in variants[INT8_FILE].items() if k != "metrics"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
