"""Bootstrap intervals of the detector's evaluation (``evaluate.bootstrap_interval``,
``bootstrap_report``): how much of a difference between two models one held-out set can show.

Synthetic scores with known structure; pure numpy/scipy, no model is run.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.avatars.evaluate import (
    bootstrap_interval,
    bootstrap_report,
    fused_scores,
    roc_auc,
    tpr_at_fpr,
)
from pipeline.avatars.fusion import FEATURES, Fusion


def _scores(n: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 3, dtype=int), np.zeros(n - n // 3, dtype=int)]
    return labels, labels * separation + rng.standard_normal(n)


def test_interval_brackets_the_full_sample_value_and_narrows_with_more_images() -> None:
    widths = []
    for n in (300, 3000):
        labels, scores = _scores(n, 2.0, seed=1)
        out = bootstrap_interval(labels, [scores], "auc", n_resamples=500)
        assert out["value"] == pytest.approx(roc_auc(labels, scores))
        assert out["low"] < out["value"] < out["high"]
        assert "share_positive" not in out
        widths.append(out["high"] - out["low"])
    assert widths[1] < 0.5 * widths[0]


def test_identical_models_differ_by_exactly_zero() -> None:
    labels, scores = _scores(600, 2.0, seed=2)
    for metric in ("auc", "tpr_at_1pct_fpr"):
        out = bootstrap_interval(labels, [scores, scores.copy()], metric, n_resamples=300)
        assert out["value"] == out["low"] == out["high"] == 0.0
        assert out["share_positive"] == 0.0


def test_a_clearly_better_model_is_told_from_noise_and_a_noisy_twin_is_not() -> None:
    labels, base = _scores(1500, 1.5, seed=3)
    rng = np.random.default_rng(4)
    better = base + 1.5 * labels
    out = bootstrap_interval(labels, [base, better], "auc", n_resamples=500)
    assert out["value"] == pytest.approx(roc_auc(labels, better) - roc_auc(labels, base))
    assert out["low"] > 0 and out["share_positive"] > 0.99

    twin = base + 0.05 * rng.standard_normal(len(base))
    out = bootstrap_interval(labels, [base, twin], "tpr_at_1pct_fpr", n_resamples=500)
    assert out["value"] == pytest.approx(tpr_at_fpr(labels, twin) - tpr_at_fpr(labels, base))
    assert out["low"] < 0 < out["high"]
    assert 0.02 < out["share_positive"] < 0.98


def test_the_same_seed_gives_the_same_interval() -> None:
    labels, scores = _scores(400, 1.0, seed=5)
    a = bootstrap_interval(labels, [scores], "auc", n_resamples=200, seed=7)
    b = bootstrap_interval(labels, [scores], "auc", n_resamples=200, seed=7)
    c = bootstrap_interval(labels, [scores], "auc", n_resamples=200, seed=8)
    assert a == b and a != c


def test_bad_inputs_are_refused() -> None:
    labels, scores = _scores(100, 1.0, seed=6)
    with pytest.raises(ValueError):
        bootstrap_interval(labels, [scores[:-1]], "auc")
    with pytest.raises(ValueError):
        bootstrap_interval(labels, [scores, scores, scores], "auc")
    with pytest.raises(KeyError):
        bootstrap_interval(labels, [scores], "accuracy")


def test_report_rows_follow_the_fused_and_cnn_scores() -> None:
    labels, cnn = _scores(300, 2.0, seed=9)
    probs = 1 / (1 + np.exp(-cnn))
    geo = np.tile([1.0, 1.0, 0.05], (len(cnn), 1))
    feats = {"clean": (probs, geo), "jpeg75_256px": (probs, geo)}
    fusion = Fusion(
        weights=(1.0,) + (0.0,) * (len(FEATURES) - 1),
        bias=0.0,
        mean=(0.0,) * len(FEATURES),
        scale=(1.0,) * len(FEATURES),
    )
    rows = fused_scores(feats, fusion)
    assert set(rows) == {"clean", "jpeg75_256px", "clean_cnn_only", "jpeg75_256px_cnn_only"}
    np.testing.assert_array_equal(rows["clean_cnn_only"], probs)
    assert set(fused_scores(feats, None)) == {"clean", "jpeg75_256px"}

    report = bootstrap_report(labels, rows, n_resamples=100)
    assert set(report) == set(rows)
    assert set(report["clean"]) == {"auc", "tpr_at_1pct_fpr"}
    # the fusion here is a monotone map of the CNN logit, so both rows rank alike
    assert report["clean"]["auc"]["value"] == pytest.approx(
        report["clean_cnn_only"]["auc"]["value"]
    )
    paired = bootstrap_report(labels, rows, base=rows, n_resamples=100)
    assert all(m["value"] == 0.0 for r in paired.values() for m in r.values())
