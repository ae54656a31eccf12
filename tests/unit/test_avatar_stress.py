"""The stress report: each change does what it says, to the class it names, and the report
scores the whole avatar path exactly as the held-out evaluation does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.avatars import dataset as ds
from pipeline.avatars import evaluate as ev
from pipeline.avatars import stress
from pipeline.avatars.detector import DEFAULT_MODEL_DIR
from pipeline.avatars.face import HaarFaceLocator
from pipeline.avatars.fusion import Fusion, feature_matrix
from pipeline.avatars.preprocess import PreprocessSpec

MANIFEST = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
CHANGES = {c.name: c for c in stress.CHANGES}


def _picture(size: tuple[int, int] = (200, 160)) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def test_changes_resize_recode_crop_and_grey_as_named() -> None:
    image = _picture()
    assert CHANGES["side_96"].apply(image).size == (96, 77)
    assert CHANGES["side_512"].apply(image).size == (512, 410)
    assert CHANGES["crop_80"].apply(image).size == (160, 128)
    grey = np.asarray(CHANGES["grey"].apply(image))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    original = np.asarray(image, dtype=np.int16)
    for name in ("webp_q80", "jpeg_q50"):
        recoded = CHANGES[name].apply(image)
        assert recoded.size == image.size and recoded.mode == "RGB"
        assert np.abs(np.asarray(recoded, dtype=np.int16) - original).mean() > 1.0
    assert np.array_equal(np.asarray(CHANGES["as_stored"].apply(image)), np.asarray(image))


def test_one_class_changes_touch_only_their_class() -> None:
    image = _picture()
    fakes, reals = CHANGES["fakes_512"], CHANGES["reals_128"]
    assert fakes.shown(image, 1).size == (512, 410) and fakes.shown(image, 0) is image
    assert reals.shown(image, 0).size == (128, 102) and reals.shown(image, 1) is image
    assert CHANGES["side_96"].shown(image, 0).size == CHANGES["side_96"].shown(image, 1).size


@pytest.fixture(scope="module")
def sample() -> list[ds.FaceRecord]:
    holdout = set(MANIFEST["training"]["holdout_sources"])
    records = [r for r in ds.read_manifest(ds.faces_dir()) if r.source in holdout]
    return ds.deterministic_sample(records, 10, salt="stress-test")


def test_report_scores_the_served_path_like_the_heldout_evaluation(
    sample: list[ds.FaceRecord],
) -> None:
    spec = PreprocessSpec.from_manifest(MANIFEST)
    scorer = ev.OnnxScorer(DEFAULT_MODEL_DIR / MANIFEST["model_file"], spec)
    locator = HaarFaceLocator()
    fusion = Fusion.of_model(MANIFEST)
    picked = [CHANGES["as_stored"], CHANGES["reals_128"]]
    report = stress.stress_report(scorer, locator, sample, fusion, picked)
    assert list(report) == ["as_stored", "reals_128"]
    labels = np.array([r.label for r in sample])
    cnn, geo = ev.features(scorer, locator, sample)["clean"]
    fused = fusion.probabilities(feature_matrix(cnn, geo))
    assert report["as_stored"]["auc"] == ev.roc_auc(labels, fused)
    assert report["as_stored"]["cnn_auc"] == ev.roc_auc(labels, cnn)
    assert report["as_stored"]["face_found_fake"] == geo[labels == 1, 0].mean()
    for row in report.values():
        assert 0.0 <= row["auc"] <= 1.0 and 0.0 <= row["tpr_at_1pct_fpr"] <= 1.0
    table = stress.markdown(report, picked)
    assert table.count("\n") == 3 and "`reals_128`: reals only" in table
