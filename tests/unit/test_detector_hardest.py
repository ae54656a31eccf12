"""``evaluate.hardest`` (``evaluate --top N``): which pictures set TPR @ 1% FPR.

Synthetic records and scores; no model is run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.avatars.dataset import FaceRecord
from pipeline.avatars.evaluate import hardest, tpr_at_fpr


def _record(i: int, label: int, source: str) -> FaceRecord:
    folder = "fake" if label else "real"
    path = Path(f"/faces/{folder}/{source.split('/')[1]}_{i}.jpg")
    return FaceRecord(path, label, source, "g" if label else "", 128, 128)


def _set() -> tuple[list[FaceRecord], np.ndarray]:
    rng = np.random.default_rng(5)
    records, scores = [], []
    for i in range(300):  # reals: one small source holds the three highest scores
        source = "real/small" if i < 3 else "real/big"
        records.append(_record(i, 0, source))
        scores.append(0.99 - 0.01 * i if i < 3 else rng.uniform(0.0, 0.6))
    for i in range(100):  # fakes: the ten weakest come from one generator's folder
        source = "fake/weak" if i < 10 else "fake/strong"
        records.append(_record(i, 1, source))
        scores.append(rng.uniform(0.0, 0.2) if i < 10 else rng.uniform(0.7, 1.0))
    return records, np.array(scores)


def test_lists_the_reals_above_the_threshold_and_the_weakest_fakes() -> None:
    records, scores = _set()
    out = hardest(records, scores, 5)
    reals = out["highest_reals"]
    assert [r["file"] for r in reals[:3]] == [f"real/small_{i}.jpg" for i in range(3)]
    assert [r["score"] for r in reals] == sorted((r["score"] for r in reals), reverse=True)
    assert out["highest_reals_by_source"]["real/small"] == 3
    # 1% of 300 reals: at most 3 strictly above the threshold, here exactly the three planted
    assert out["reals_above"] == 3
    assert out["threshold_at_fpr"] == max(scores[3:300])
    fakes = out["lowest_fakes"]
    assert len(fakes) == 5 and {f["source"] for f in fakes} == {"fake/weak"}
    assert [f["score"] for f in fakes] == sorted(f["score"] for f in fakes)
    labels = np.array([r.label for r in records])
    assert out["fakes_above"] == round(tpr_at_fpr(labels, scores) * labels.sum())


def test_a_count_larger_than_a_class_lists_the_whole_class() -> None:
    records, scores = _set()
    out = hardest(records[290:310], scores[290:310], 50)
    assert len(out["highest_reals"]) == 10 and len(out["lowest_fakes"]) == 10
