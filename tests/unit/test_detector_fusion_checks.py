"""The validation-only fusion checks: per-source hold-out of the combiner against the CNN alone.

Pure: synthetic CNN probabilities and face-geometry rows (no images, no model), built so one real
source is only separable by its eye geometry, which the per-source check must reveal.
"""

from __future__ import annotations

import numpy as np
from face_records import face_records

from pipeline.avatars import dataset as ds
from pipeline.avatars.evaluate import per_source_holdout


def _features(records: list[ds.FaceRecord], seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CNN scores overlap between classes; fakes and real/aligned put the eyes at the canonical
    spot (offset ~0.01), real/loose far from it (offset ~0.1), real/mixed half and half (so a
    fit without real/loose still sees what the geometry is worth)."""
    rng = np.random.default_rng(seed)
    labels = np.array([r.label for r in records])
    loose = np.array(
        [
            r.source == "real/loose" or (r.source == "real/mixed" and i % 2 == 0)
            for i, r in enumerate(records)
        ]
    )
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for condition in ("clean", "jpeg75_256px"):
        logit = 1.2 * (labels - 0.5) + rng.standard_normal(len(records))
        cnn = 1.0 / (1.0 + np.exp(-logit))
        offset = np.where(loose, 0.10, 0.01) + 0.005 * rng.random(len(records))
        geo = np.column_stack([np.ones(len(records)), np.ones(len(records)), offset])
        out[condition] = (cnn, geo)
    return out


SIZES = {
    "fake/a": 120,
    "fake/b": 80,
    "real/aligned": 80,
    "real/mixed": 80,
    "real/loose": 60,
    "real/tiny": 5,
}


def test_per_source_holdout_shows_geometry_helping_an_unseen_loose_real_source() -> None:
    records = face_records(SIZES)
    result = per_source_holdout(records, _features(records, seed=1))
    assert set(result) == {
        "fake/a",
        "fake/b",
        "real/aligned",
        "real/mixed",
        "real/loose",
        "mean_real",
        "mean_fake",
    }
    loose = result["real/loose"]
    assert loose["fused_auc"] > loose["cnn_auc"] + 0.05
    assert loose["fused_tpr_at_1pct_fpr"] > loose["cnn_tpr_at_1pct_fpr"]
    aligned = result["real/aligned"]
    assert abs(aligned["fused_auc"] - aligned["cnn_auc"]) < 0.05
    folds = [result[s]["fused_auc"] for s in ("real/aligned", "real/mixed", "real/loose")]
    assert result["mean_real"]["fused_auc"] == np.mean(folds)


def test_per_source_holdout_cnn_rows_need_no_fit() -> None:
    records = face_records(SIZES)
    feats = _features(records, seed=2)
    first = per_source_holdout(records, feats, l2=1.0)
    other = per_source_holdout(records, feats, l2=100.0)
    for source in ("fake/a", "real/loose"):
        assert first[source]["cnn_auc"] == other[source]["cnn_auc"]
        assert 0.5 < first[source]["cnn_auc"] < 1.0
