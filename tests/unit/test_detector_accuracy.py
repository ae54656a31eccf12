"""The committed AI-face detector still separates held-out sources, and preprocessing is exact.

Runs the shipped model file (``manifest.json: model_file``, the INT8 ``detector-int8.onnx``) on
CPU over a fixed, hash-picked sample of images from the sources the model never saw in training
(see ``manifest.json``), read from ``../shared/data/faces``. Floors sit a little below the
numbers measured at release on this sample (``lite0-sg2c6g-20261130``, a five-way average with
a greyscale-trained ingredient, mixed-precision INT8: CNN AUC 0.988 clean / 0.989 degraded,
fused 0.990 / 0.991, accuracy 0.775 at ``cnn_threshold`` and 0.955 at 0.5;
``lite0-sg2c6qm-20261130``: 0.988 / 0.989, 0.991 / 0.990, 0.76 and 0.955; its weights' previous
INT8 file ``lite0-sg2c6q-20261130``: 0.987 / 0.989, 0.990 / 0.992, 0.76 / 0.77 and 0.94 / 0.955;
``lite0-sg2c6s-20261130``: 0.987 / 0.987, 0.989 / 0.989, 0.77 and 0.945; docs/model.md), and all
clear them, so a broken
export, a preprocessing drift or a worse retrain fails here.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.avatars import dataset as ds
from pipeline.avatars.detector import DEFAULT_MODEL_DIR, OnnxDetector
from pipeline.avatars.evaluate import degrade, roc_auc, threshold_at_fpr, tpr_at_fpr
from pipeline.avatars.face import CANONICAL_EYES, FaceFinding, HaarFaceLocator
from pipeline.avatars.fusion import FEATURES, Fusion, feature_matrix, geometry
from pipeline.avatars.preprocess import PreprocessSpec, preprocess, preprocess_batch

PER_CLASS = 100
AUC_FLOOR_CLEAN = 0.98
AUC_FLOOR_DEGRADED = 0.98
ACCURACY_FLOOR = 0.72
ACCURACY_AT_HALF_FLOOR = 0.92
REAL_FPR_CEILING = 0.05
FUSED_AUC_FLOOR_CLEAN = 0.985
FUSED_AUC_FLOOR_DEGRADED = 0.985


@pytest.fixture(scope="module")
def detector() -> OnnxDetector:
    return OnnxDetector(prefer_gpu=False, intra_op_threads=2)


@pytest.fixture(scope="module")
def heldout_sample() -> tuple[list[Image.Image], np.ndarray]:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    holdout = set(manifest["training"]["holdout_sources"])
    records = [r for r in ds.read_manifest(ds.faces_dir()) if r.source in holdout]
    sample = ds.deterministic_sample(records, PER_CLASS, salt="unit-test")
    images = [ds.load_image(r.path) for r in sample]
    return images, np.array([r.label for r in sample])


def test_heldout_sources_are_not_in_training(detector: OnnxDetector) -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    training = manifest["training"]
    assert set(training["holdout_sources"]).isdisjoint(training["train_counts"])
    assert set(training["holdout_sources"]).isdisjoint(training["val_counts"])
    assert detector.model_version == manifest["version"]
    assert 0.0 < detector.threshold < 1.0


def test_heldout_sample_is_separated(
    detector: OnnxDetector, heldout_sample: tuple[list[Image.Image], np.ndarray]
) -> None:
    images, labels = heldout_sample
    assert (labels == 1).sum() == PER_CLASS and (labels == 0).sum() == PER_CLASS
    scores = np.array(detector.score_batch(images))
    assert scores.shape == (2 * PER_CLASS,)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    assert roc_auc(labels, scores) >= AUC_FLOOR_CLEAN
    flagged = scores > detector.cnn_threshold
    assert (flagged == (labels == 1)).mean() >= ACCURACY_FLOOR
    assert flagged[labels == 0].mean() <= REAL_FPR_CEILING
    assert ((scores > 0.5) == (labels == 1)).mean() >= ACCURACY_AT_HALF_FLOOR


def test_heldout_sample_survives_jpeg75_and_downscale(
    detector: OnnxDetector, heldout_sample: tuple[list[Image.Image], np.ndarray]
) -> None:
    images, labels = heldout_sample
    scores = np.array(detector.score_batch([degrade(im) for im in images]))
    assert roc_auc(labels, scores) >= AUC_FLOOR_DEGRADED


def _fused(detector: OnnxDetector, images: list[Image.Image]) -> np.ndarray:
    locator = HaarFaceLocator()
    findings = [locator.locate(im) for im in images]
    cnn = detector.score_batch(images)
    return np.array(detector.fuse(cnn, findings, [im.size for im in images]))


def test_fused_score_separates_heldout_sample_better_than_the_cnn(
    detector: OnnxDetector, heldout_sample: tuple[list[Image.Image], np.ndarray]
) -> None:
    images, labels = heldout_sample
    assert detector.fused
    fused = _fused(detector, images)
    assert np.all((fused >= 0.0) & (fused <= 1.0))
    assert roc_auc(labels, fused) >= FUSED_AUC_FLOOR_CLEAN
    assert roc_auc(labels, fused) > roc_auc(labels, np.array(detector.score_batch(images)))
    assert (fused[labels == 0] > detector.threshold).mean() <= REAL_FPR_CEILING


def test_fused_score_survives_jpeg75_and_downscale_before_the_face_step(
    detector: OnnxDetector, heldout_sample: tuple[list[Image.Image], np.ndarray]
) -> None:
    images, labels = heldout_sample
    fused = _fused(detector, [degrade(im) for im in images])
    assert roc_auc(labels, fused) >= FUSED_AUC_FLOOR_DEGRADED


def test_fusion_rises_with_the_cnn_and_with_stylegan_eye_alignment(
    detector: OnnxDetector,
) -> None:
    left, right = CANONICAL_EYES
    aligned = FaceFinding(True, (10, 10, 100, 100), ((40, 50), (60, 50)), (left, right))
    loose = FaceFinding(True, (10, 10, 100, 100), ((40, 50), (60, 50)), ((0.2, 0.3), (0.45, 0.32)))
    size = (128, 128)
    low, high = detector.fuse([0.3, 0.9], [aligned, aligned], [size, size])
    assert high > low
    near, far = detector.fuse([0.5, 0.5], [aligned, loose], [size, size])
    assert near > far
    with pytest.raises(ValueError):
        detector.fuse([0.5], [], [])


def test_fusion_fit_and_manifest_round_trip() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    cnn = np.clip(0.5 + 0.3 * (labels - 0.5) + 0.2 * rng.standard_normal(400), 0.01, 0.99)
    offsets = np.where(labels == 1, 0.01, 0.08) + 0.01 * rng.random(400)
    rows = np.column_stack([np.ones(400), np.ones(400), offsets])
    x = feature_matrix(cnn, rows)
    assert x.shape == (400, len(FEATURES))
    fusion = Fusion.fit(x, labels, l2=1.0)
    fused = fusion.probabilities(x)
    assert roc_auc(labels, fused) > roc_auc(labels, cnn)
    again = Fusion.from_manifest(fusion.to_manifest())
    assert np.allclose(again.probabilities(x), fused)
    bad = {**fusion.to_manifest(), "features": ["cnn_logit"]}
    with pytest.raises(ValueError):
        Fusion.from_manifest(bad)
    assert geometry(FaceFinding.none(), (64, 64))[:2] == (0.0, 0.0)


def test_batch_scores_match_single_scores(
    detector: OnnxDetector, heldout_sample: tuple[list[Image.Image], np.ndarray]
) -> None:
    images = heldout_sample[0][:4]
    batch = detector.score_batch(images)
    single = [detector.score_batch([im])[0] for im in images]
    assert np.allclose(batch, single, atol=1e-5)
    assert detector.score_batch([]) == []


SPEC = PreprocessSpec(input_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.5))


def _noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode)


@pytest.mark.parametrize(
    ("width", "height", "mode"),
    [(128, 128, "RGB"), (178, 218, "RGB"), (300, 90, "RGBA"), (40, 40, "L")],
)
def test_preprocess_shape_dtype_and_determinism(width: int, height: int, mode: str) -> None:
    image = _noise_image(width, height, mode)
    first = preprocess(image, SPEC)
    second = preprocess(image.copy(), SPEC)
    assert first.shape == (3, 64, 64)
    assert first.dtype == np.float32
    assert first.flags["C_CONTIGUOUS"]
    assert np.array_equal(first, second)


def test_preprocess_normalisation_is_per_channel() -> None:
    white = Image.new("RGB", (80, 80), (255, 0, 128))
    x = preprocess(white, SPEC)
    assert np.allclose(x[0], (1.0 - 0.5) / 0.25)
    assert np.allclose(x[1], (0.0 - 0.5) / 0.5)
    assert np.allclose(x[2], (128 / 255 - 0.5) / 0.5, atol=1e-6)


def test_preprocess_crops_the_centre_square() -> None:
    wide = Image.new("RGB", (192, 64), (0, 0, 0))
    wide.paste((255, 255, 255), (64, 0, 128, 64))
    x = preprocess(wide, SPEC)
    assert np.allclose(x[1], (1.0 - 0.5) / 0.5)


def test_preprocess_batch_equals_stacked_singles() -> None:
    images = [_noise_image(100 + 10 * i, 120, seed=i) for i in range(3)]
    batch = preprocess_batch(images, SPEC)
    assert batch.shape == (3, 3, 64, 64)
    for i, image in enumerate(images):
        assert np.array_equal(batch[i], preprocess(image, SPEC))


def test_spec_round_trips_through_manifest() -> None:
    assert PreprocessSpec.from_manifest({"input": SPEC.to_manifest()}) == SPEC
    with pytest.raises(ValueError):
        PreprocessSpec.from_manifest({"input": {"size": 64, "mean": [0.5], "std": [1, 1, 1]}})


def test_roc_auc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 1)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert roc_auc(labels, scores) == pytest.approx(float(np.mean(pairs)))


def test_threshold_keeps_false_positive_rate() -> None:
    rng = np.random.default_rng(4)
    reals = rng.random(1000)
    threshold = threshold_at_fpr(reals, 0.01)
    assert (reals > threshold).mean() <= 0.01
    assert (reals >= threshold).mean() > 0.01 - 1e-9
    fakes = reals + 2.0
    labels = np.r_[np.zeros(1000), np.ones(1000)]
    assert tpr_at_fpr(labels, np.r_[reals, fakes]) == 1.0
