"""Held-out evaluation of the exported ONNX detector, clean and after platform-like degradation.

Runs the committed ``detector.onnx`` through onnxruntime (numpy only, no torch, no sklearn) on
the sources that training never saw, and reports ROC AUC, TPR at 1% FPR and the error rates at
the calibrated threshold: overall, per source and per generator, on the original files and after
a down-scale to at most 256 px plus JPEG q75 re-encode (applied before the face step, as the
platform would). When the manifest carries a ``fusion`` block the headline rows are the fused
score and ``*_cnn_only`` rows give the CNN alone. Run ``python -m pipeline.avatars.evaluate``;
``--fit-fusion`` fits the combiner on the validation split and writes it into the manifest.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from pipeline.avatars import dataset as ds
from pipeline.avatars.face import HaarFaceLocator
from pipeline.avatars.fusion import Fusion, feature_matrix, geometry
from pipeline.avatars.preprocess import PreprocessSpec, preprocess_batch
from pipeline.imaging import reencoded

MODEL_DIR = Path(__file__).resolve().parent / "model"
DEGRADE_SIDE = 256
DEGRADE_QUALITY = 75


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN if a class is missing."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_at_fpr(real_scores: np.ndarray, fpr: float) -> float:
    """Smallest listed score ``t`` with at most ``fpr`` of the reals strictly above ``t``."""
    ordered = np.sort(np.asarray(real_scores, dtype=np.float64))[::-1]
    if len(ordered) == 0:
        raise ValueError("no real scores to calibrate on")
    k = min(len(ordered) - 1, int(math.floor(fpr * len(ordered))))
    return float(ordered[k])


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float = 0.01) -> float:
    """TPR when the threshold lets at most ``fpr`` of the negatives through."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        return math.nan
    threshold = threshold_at_fpr(scores[~labels], fpr)
    return float((scores[labels] > threshold).mean())


def degrade(image: Image.Image) -> Image.Image:
    """Down-scale so the longer side is at most 256 px, then re-encode as JPEG q75."""
    return reencoded(ds.shrunk(image.convert("RGB"), DEGRADE_SIDE), "JPEG", quality=DEGRADE_QUALITY)


class OnnxScorer:
    """Scores decoded images with an ONNX detector on the CPU provider (evaluation only)."""

    def __init__(self, model_path: Path, spec: PreprocessSpec, threads: int = 2) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.spec = spec

    def score(self, images: Sequence[Image.Image], batch: int = 64) -> np.ndarray:
        """Probability of AI-generated for each image, float64 array in input order."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch):
            x = preprocess_batch(images[start : start + batch], self.spec)
            (probs,) = self.session.run(None, {self.input_name: x})
            out.append(np.asarray(probs, dtype=np.float64).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0)


def _summary(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    fake = labels == 1
    result: dict[str, Any] = {"n_fake": int(fake.sum()), "n_real": int((~fake).sum())}
    result["auc"] = roc_auc(labels, scores)
    result["tpr_at_1pct_fpr"] = tpr_at_fpr(labels, scores, 0.01)
    result["tpr_at_threshold"] = float((scores[fake] > threshold).mean()) if fake.any() else None
    result["fpr_at_threshold"] = (
        float((scores[~fake] > threshold).mean()) if (~fake).any() else None
    )
    accuracy = ((scores > threshold) == fake).mean() if len(scores) else math.nan
    result["accuracy_at_threshold"] = float(accuracy)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}


def report(
    records: Sequence[ds.FaceRecord], scores: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Overall, per-source and per-generator metrics for one scoring pass.

    A fake source (or generator) is scored against all reals of the set; a real source against
    all fakes of the set, so every row has an AUC whenever both classes are present.
    """
    labels = np.array([r.label for r in records])
    out: dict[str, Any] = {"overall": _summary(labels, scores, threshold)}
    groups: dict[str, dict[str, np.ndarray]] = {"per_source": {}, "per_generator": {}}
    for key, attr in (("per_source", "source"), ("per_generator", "generator")):
        names = sorted({getattr(r, attr) for r in records})
        for name in names:
            member = np.array([getattr(r, attr) == name for r in records])
            label = labels[member][0]
            mask = member | (labels != label)
            groups[key][name] = mask
    for key, masks in groups.items():
        out[key] = {
            name: _summary(labels[mask], scores[mask], threshold) for name, mask in masks.items()
        }
    return out


CONDITIONS = ("clean", "jpeg75_256px")

METRICS = {"auc": roc_auc, "tpr_at_1pct_fpr": tpr_at_fpr}
"""The two target metrics, by report key; each takes ``(labels, scores)``."""


def bootstrap_interval(
    labels: np.ndarray,
    scores: Sequence[np.ndarray],
    metric: str,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap over images (``scipy.stats.bootstrap``, paired: every resample
    draws the same images for all score arrays).

    With one score array: its ``metric`` (a ``METRICS`` key) and the interval of it. With two
    (``base``, ``new``) scored on the same images: ``new``'s metric minus ``base``'s, its
    interval, and ``share_positive``, the share of resamples in which ``new`` was better, so a
    difference between two models can be told from the noise of one held-out set.
    """
    from scipy.stats import bootstrap

    fn = METRICS[metric]
    y = np.asarray(labels)
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    if len(arrays) not in (1, 2) or any(len(a) != len(y) for a in arrays):
        raise ValueError("one or two score arrays, each with one score per label")

    def statistic(index: np.ndarray) -> float:
        idx = index.astype(int)
        value = fn(y[idx], arrays[-1][idx])
        return value - fn(y[idx], arrays[0][idx]) if len(arrays) == 2 else value

    point = statistic(np.arange(len(y)))
    result = bootstrap(
        (np.arange(len(y), dtype=np.float64),),
        statistic,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    out = {
        "value": float(point),
        "low": float(result.confidence_interval.low),
        "high": float(result.confidence_interval.high),
    }
    if len(arrays) == 2:
        out["share_positive"] = float(np.mean(result.bootstrap_distribution > 0))
    return out


def fused_scores(
    feats: dict[str, tuple[np.ndarray, np.ndarray]], fusion: Fusion | None
) -> dict[str, np.ndarray]:
    """Per report row (``clean``, ``jpeg75_256px`` and, with ``fusion``, their ``_cnn_only``
    twins, in that order): the score ``report_features`` ranks, one per record."""
    if fusion is None:
        return {condition: cnn for condition, (cnn, _) in feats.items()}
    out = {
        condition: fusion.probabilities(feature_matrix(cnn, geo))
        for condition, (cnn, geo) in feats.items()
    }
    out.update({f"{condition}_cnn_only": cnn for condition, (cnn, _) in feats.items()})
    return out


def bootstrap_report(
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    base: dict[str, np.ndarray] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """``bootstrap_interval`` of both target metrics for every row of ``scores``; with
    ``base`` (another model's ``fused_scores`` on the same records) the paired difference."""
    return {
        row: {
            metric: bootstrap_interval(
                labels,
                [s] if base is None else [base[row], s],
                metric,
                n_resamples=n_resamples,
                seed=seed,
            )
            for metric in METRICS
        }
        for row, s in scores.items()
        if base is None or row in base
    }


def hardest(
    records: Sequence[ds.FaceRecord], scores: np.ndarray, n: int, fpr: float = 0.01
) -> dict[str, Any]:
    """The pictures that set TPR @ ``fpr``: the ``n`` highest-scoring reals (those strictly
    above ``threshold_at_fpr`` are the false positives there) and the ``n`` lowest-scoring fakes,
    each with its file, source and score, and the count of each class per source among them."""
    labels = np.array([r.label for r in records])
    scores = np.asarray(scores, dtype=np.float64)
    real = labels == 0
    threshold = threshold_at_fpr(scores[real], fpr)

    def rows(label: int, descending: bool) -> list[dict[str, Any]]:
        index = np.flatnonzero(labels == label)
        order = index[np.argsort(-scores[index] if descending else scores[index], kind="stable")]
        return [
            {
                "file": f"{records[i].path.parent.name}/{records[i].path.name}",
                "source": records[i].source,
                "score": round(float(scores[i]), 6),
            }
            for i in order[:n]
        ]

    reals, fakes = rows(0, True), rows(1, False)
    return {
        "threshold_at_fpr": threshold,
        "fpr": fpr,
        "reals_above": int((scores[real] > threshold).sum()),
        "fakes_above": int((scores[~real] > threshold).sum()),
        "highest_reals": reals,
        "highest_reals_by_source": dict(Counter(r["source"] for r in reals).most_common()),
        "lowest_fakes": fakes,
        "lowest_fakes_by_source": dict(Counter(r["source"] for r in fakes).most_common()),
    }


def image_features(
    scorer: OnnxScorer, locator: HaarFaceLocator, images: Sequence[Image.Image]
) -> tuple[np.ndarray, np.ndarray]:
    """(CNN probabilities, fusion ``geometry`` rows) of ``images`` as shown."""
    geo = np.array([geometry(locator.locate(im), im.size) for im in images]).reshape(-1, 3)
    return scorer.score(images), geo


def features(
    scorer: OnnxScorer, locator: HaarFaceLocator, records: Sequence[ds.FaceRecord]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per condition: (CNN probabilities, fusion ``geometry`` rows) of every record."""
    images = [ds.load_image(r.path) for r in records]
    return {
        condition: image_features(
            scorer, locator, images if condition == "clean" else [degrade(im) for im in images]
        )
        for condition in CONDITIONS
    }


def evaluate_records(
    scorer: OnnxScorer,
    records: Sequence[ds.FaceRecord],
    threshold: float,
    *,
    fusion: Fusion | None = None,
    cnn_threshold: float | None = None,
    locator: HaarFaceLocator | None = None,
) -> dict[str, Any]:
    """Score the original files and their degraded copies; report both.

    With ``fusion`` the ``clean``/``jpeg75_256px`` rows are the fused score at ``threshold``
    and ``clean_cnn_only``/``jpeg75_256px_cnn_only`` the CNN alone at ``cnn_threshold``.
    """
    feats = features(scorer, locator or HaarFaceLocator(), records)
    return report_features(records, feats, threshold, fusion, cnn_threshold)


def training_metrics(
    scorer: OnnxScorer, split: ds.Split, threshold: float, heldout: bool = False
) -> dict[str, Any]:
    """The ``metrics`` block of a freshly trained model: the validation report, and the
    held-out one only when ``heldout`` is asked for. Without it no held-out image is read:
    held-out numbers seen right after training leak into the choices made next (docs/model.md,
    "Selection"), so they are scored by ``evaluate`` when a written rule calls for them."""
    metrics: dict[str, Any] = {"validation": evaluate_records(scorer, split.val, threshold)}
    if heldout:
        metrics["heldout_test"] = evaluate_records(scorer, split.test, threshold)
    return metrics


def report_features(
    records: Sequence[ds.FaceRecord],
    feats: dict[str, tuple[np.ndarray, np.ndarray]],
    threshold: float,
    fusion: Fusion | None = None,
    cnn_threshold: float | None = None,
) -> dict[str, Any]:
    """Reports from precomputed ``features`` (see ``evaluate_records``)."""
    cnn_only = threshold if cnn_threshold is None else cnn_threshold
    return {
        row: report(records, scores, cnn_only if row.endswith("_cnn_only") else threshold)
        for row, scores in fused_scores(feats, fusion).items()
    }


def fit_fusion(
    records: Sequence[ds.FaceRecord],
    feats: dict[str, tuple[np.ndarray, np.ndarray]],
    l2: float = 1.0,
) -> tuple[Fusion, float]:
    """Fit the combiner on (validation) records, clean and degraded copies together, and the
    threshold flagging at most 1% of their reals."""
    labels = np.array([r.label for r in records])
    x = np.vstack([feature_matrix(cnn, geo) for cnn, geo in feats.values()])
    y = np.concatenate([labels] * len(feats))
    fusion = Fusion.fit(x, y, l2)
    return fusion, threshold_at_fpr(fusion.probabilities(x)[y == 0], 0.01)


def _stacked(
    records: Sequence[ds.FaceRecord],
    feats: dict[str, tuple[np.ndarray, np.ndarray]],
    min_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The fusion's feature rows of every copy in ``feats`` (clean, degraded) stacked, their
    labels and sources, and the sources with at least ``min_size`` records."""
    labels = np.array([r.label for r in records])
    sources = np.array([r.source for r in records])
    x = np.vstack([feature_matrix(cnn, geo) for cnn, geo in feats.values()])
    y = np.concatenate([labels] * len(feats))
    groups = np.concatenate([sources] * len(feats))
    names = [g for g in sorted(set(sources)) if (sources == g).sum() >= min_size]
    return x, y, groups, names


def leave_one_source_out(
    records: Sequence[ds.FaceRecord],
    feats: dict[str, tuple[np.ndarray, np.ndarray]],
    l2: float = 1.0,
    min_size: int = 10,
) -> dict[str, float]:
    """Pooled out-of-fold ROC AUC of the combiner vs the CNN alone, each source with at least
    ``min_size`` records held out in turn (clean and degraded copies together); validation-only
    evidence for whether fusion generalises across sources. ``cnn_refit_auc`` passes the CNN
    logit alone through the same per-fold refit (same calibration noise as ``fused_auc``);
    ``cnn_auc`` is the raw CNN score, pooled without any fitting."""
    x, y, groups, names = _stacked(records, feats, min_size)
    fused = np.zeros(len(y))
    refit = np.zeros(len(y))
    for name in names:
        out = groups == name
        fused[out] = Fusion.fit(x[~out], y[~out], l2).probabilities(x[out])
        refit[out] = Fusion.fit(x[~out, :1], y[~out], l2).probabilities(x[out, :1])
    keep = np.isin(groups, names)
    cnn = x[:, 0]
    return {
        "fused_auc": roc_auc(y[keep], fused[keep]),
        "cnn_refit_auc": roc_auc(y[keep], refit[keep]),
        "cnn_auc": roc_auc(y[keep], cnn[keep]),
        "fused_tpr_at_1pct_fpr": tpr_at_fpr(y[keep], fused[keep]),
        "cnn_tpr_at_1pct_fpr": tpr_at_fpr(y[keep], cnn[keep]),
    }


def per_source_holdout(
    records: Sequence[ds.FaceRecord],
    feats: dict[str, tuple[np.ndarray, np.ndarray]],
    l2: float = 1.0,
    min_size: int = 20,
) -> dict[str, dict[str, float]]:
    """Per source S (at least ``min_size`` records): the combiner refitted without S, then S
    scored against every record of the other class by that one fit (clean and degraded copies
    together), fused vs the raw CNN score. Unlike ``leave_one_source_out`` no scores from
    different fits are pooled, so per-fold calibration shifts cannot move the result; the
    ``mean_real`` / ``mean_fake`` rows average the folds of each class. A real fold asks "does
    the fusion still rank an unseen kind of real photo below the fakes", the question a new
    real source (news photos, selfies) poses. Validation-only evidence."""
    x, y, groups, names = _stacked(records, feats, min_size)
    out: dict[str, dict[str, float]] = {}
    for name in names:
        held = groups == name
        fused = Fusion.fit(x[~held], y[~held], l2).probabilities(x)
        pair = held | (y != y[held][0])
        out[name] = {
            "cnn_auc": roc_auc(y[pair], x[pair, 0]),
            "fused_auc": roc_auc(y[pair], fused[pair]),
            "cnn_tpr_at_1pct_fpr": tpr_at_fpr(y[pair], x[pair, 0]),
            "fused_tpr_at_1pct_fpr": tpr_at_fpr(y[pair], fused[pair]),
        }
    for kind in ("real", "fake"):
        rows = [v for k, v in out.items() if k.startswith(kind + "/")]
        if rows:
            out[f"mean_{kind}"] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return out


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if percent else f"{value:.4f}"


def markdown_tables(result: dict[str, Any]) -> str:
    """Render an ``evaluate_records`` result as Markdown tables (one row per group)."""
    lines: list[str] = []
    for condition, body in result.items():
        lines += [
            f"**{condition}**",
            "",
            "| group | n fake | n real | ROC AUC | TPR @ 1% FPR | TPR @ thr | FPR @ thr |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = [("overall", body["overall"])]
        rows += [(f"source `{k}`", v) for k, v in body["per_source"].items()]
        generators = body["per_generator"].items()
        rows += [(f"generator: {k}", v) for k, v in generators if not k.startswith("real")]
        for name, row in rows:
            lines.append(
                f"| {name} | {row['n_fake']} | {row['n_real']} | {_fmt(row['auc'])} "
                f"| {_fmt(row['tpr_at_1pct_fpr'], True)} | {_fmt(row['tpr_at_threshold'], True)} "
                f"| {_fmt(row['fpr_at_threshold'], True)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _emit(payload: dict[str, Any], out: Path | None) -> None:
    """Print ``payload`` as indented JSON, and write it to ``out`` too when one is given."""
    text = json.dumps(payload, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    print(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate the committed model on its held-out sources and print the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.avatars.evaluate")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--shared-dir", default=None)
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--model-file",
        default=None,
        help="ONNX file in --model-dir to score (default: the manifest's model_file); its "
        "thresholds come from the manifest's variants block when recorded there",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="store the held-out report in manifest.json under variants[model file] (and as "
        "metrics.heldout_test when that file is the default)",
    )
    parser.add_argument(
        "--markdown-from-manifest",
        action="store_true",
        help="print the metrics stored in manifest.json as Markdown tables, score nothing",
    )
    parser.add_argument(
        "--fit-fusion",
        action="store_true",
        help="fit the score/geometry combiner on the validation split, write it, the fused "
        "threshold and the held-out/validation metrics into manifest.json",
    )
    parser.add_argument(
        "--holdout",
        default=None,
        help="comma-separated held-out sources to test on instead of the manifest's "
        "training.holdout_sources (e.g. an older model on a newer model's held-out set); "
        "must not name a source the model trained on; with --record the report is stored "
        "under heldout_test:<sources> instead of heldout_test",
    )
    parser.add_argument("--l2", type=float, default=1.0, help="fusion L2 penalty")
    parser.add_argument(
        "--loso",
        action="store_true",
        help="leave-one-source-out checks of the fusion on the validation split only (pooled "
        "out-of-fold, and per source against the other class)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="print 95%% percentile-bootstrap intervals (N resamples of the images) of AUC and "
        "TPR @ 1%% FPR for every report row instead of the report; records nothing",
    )
    parser.add_argument(
        "--compare-model-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --bootstrap: also score the default file of the model in DIR on the same "
        "images and give the paired difference (this model minus that one)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=0,
        metavar="N",
        help="print, per report row, the N highest-scoring reals and N lowest-scoring fakes "
        "(the pictures that set TPR @ 1%% FPR) instead of the report; records nothing",
    )
    args = parser.parse_args(argv)
    if args.compare_model_dir is not None and args.bootstrap <= 0:
        parser.error("--compare-model-dir needs --bootstrap N")
    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    if args.markdown_from_manifest:
        key = "heldout_test" if args.split == "test" else "validation"
        print(markdown_tables(manifest["metrics"][key]))
        return 0
    spec = PreprocessSpec.from_manifest(manifest)
    default_file = str(manifest.get("model_file", "detector.onnx"))
    model_file = args.model_file or default_file
    variant = manifest.get("variants", {}).get(model_file, {})
    threshold = float(variant.get("threshold", manifest["threshold"]))
    cnn_threshold = variant.get("cnn_threshold", manifest.get("cnn_threshold"))
    training = manifest["training"]
    holdout = list(training["holdout_sources"])
    report_key = "heldout_test"
    if args.holdout is not None:
        wanted = sorted(s for s in args.holdout.split(",") if s)
        seen = set(training.get("train_counts", {})) | set(training.get("val_counts", {}))
        overlap = sorted(seen & set(wanted))
        if overlap:
            parser.error(f"--holdout names sources the model trained on: {overlap}")
        if args.fit_fusion or args.loso:
            parser.error("--holdout is for scoring only")
        if wanted != sorted(holdout):
            holdout = wanted
            report_key = "heldout_test:" + ",".join(wanted)
    split = ds.model_split(training, args.shared_dir, holdout)
    scorer = OnnxScorer(args.model_dir / model_file, spec)
    locator = HaarFaceLocator()
    if args.loso:
        val_feats = features(scorer, locator, split.val)
        pooled = leave_one_source_out(split.val, val_feats, args.l2)
        per_source = per_source_holdout(split.val, val_feats, args.l2)
        print(json.dumps({**pooled, "per_source": per_source}))
        return 0
    if args.fit_fusion:
        if model_file != "detector.onnx" or "variants" in manifest:
            parser.error("--fit-fusion refits the fp32 model's block; run it before quantising")
        cnn_threshold = float(manifest.get("cnn_threshold", manifest["threshold"]))
        val_feats = features(scorer, locator, split.val)
        fusion, threshold = fit_fusion(split.val, val_feats, args.l2)
        test_feats = features(scorer, locator, split.test)
        manifest["cnn_threshold"] = cnn_threshold
        manifest["threshold"] = threshold
        manifest["threshold_rule"] = (
            "fused score: 1% FPR on validation reals (clean + q75/256px); cnn_threshold: the "
            "same rule on the CNN probability"
        )
        manifest["fusion"] = {
            **fusion.to_manifest(),
            "fitted_on": "validation split only (clean + q75/256px copies), L2 "
            f"{args.l2} on standardised columns, classes weighted equally",
        }
        manifest.setdefault("metrics", {})
        manifest["metrics"]["heldout_test"] = report_features(
            split.test, test_feats, threshold, fusion, cnn_threshold
        )
        manifest["metrics"]["validation"] = report_features(
            split.val, val_feats, threshold, fusion, cnn_threshold
        )
        (args.model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(json.dumps(manifest["metrics"]["heldout_test"], indent=2))
        return 0
    records = split.test if args.split == "test" else split.val
    if args.top > 0 or args.bootstrap > 0:
        scores = fused_scores(features(scorer, locator, records), Fusion.of_model(manifest))
        model = {"version": manifest.get("version"), "model_file": model_file}
        if args.top > 0:
            _emit(
                {"model": model, **{r: hardest(records, s, args.top) for r, s in scores.items()}},
                args.out,
            )
            return 0
        base = None
        compared: dict[str, Any] | None = None
        if args.compare_model_dir is not None:
            other = json.loads((args.compare_model_dir / "manifest.json").read_text())
            other_file = str(other.get("model_file", "detector.onnx"))
            other_scorer = OnnxScorer(
                args.compare_model_dir / other_file, PreprocessSpec.from_manifest(other)
            )
            base = fused_scores(features(other_scorer, locator, records), Fusion.of_model(other))
            compared = {"version": other.get("version"), "model_file": other_file}
        labels = np.array([r.label for r in records])
        summary = {
            "model": model,
            "compared_with": compared,
            "split": args.split,
            "n_fake": int(labels.sum()),
            "n_real": int((labels == 0).sum()),
            "n_resamples": args.bootstrap,
            "level": 0.95,
            "rows": bootstrap_report(labels, scores, base, n_resamples=args.bootstrap),
        }
        _emit(summary, args.out)
        return 0
    result = evaluate_records(
        scorer,
        records,
        threshold,
        fusion=Fusion.of_model(manifest),
        cnn_threshold=None if cnn_threshold is None else float(cnn_threshold),
        locator=locator,
    )
    _emit(result, args.out)
    if args.record and args.split == "test":
        manifest = json.loads((args.model_dir / "manifest.json").read_text())
        recorded = manifest.setdefault("variants", {}).setdefault(
            model_file, {"threshold": threshold, "cnn_threshold": cnn_threshold}
        )
        recorded.setdefault("metrics", {})[report_key] = result
        if model_file == default_file:
            manifest.setdefault("metrics", {})[report_key] = result
            manifest["metrics_model_file"] = model_file
        (args.model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
