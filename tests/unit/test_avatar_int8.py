"""The INT8 detector: how it is made, which file a worker loads, and the worker's thread settings.

Uses the committed model folder (``pipeline/avatars/model``) and real onnxruntime sessions:
the thread counts are read back from the running session, not from the arguments passed in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from pipeline.avatars import dataset as ds
from pipeline.avatars.detector import (
    DEFAULT_MODEL_DIR,
    FP32_MODEL_FILE,
    OnnxDetector,
    open_detector,
    set_opencv_threads,
)
from pipeline.avatars.evaluate import roc_auc
from pipeline.avatars.preprocess import PreprocessSpec, preprocess_batch
from pipeline.avatars.quantize import (
    INT8_FILE,
    calibration_batches,
    equal_batches,
    float_nodes,
    quantize_model,
    rename_version,
    select,
)
from pipeline.settings import AvatarSettings, DatabaseSettings, ReviewSettings, Settings

MANIFEST = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())


def test_thread_settings_default_to_one_per_worker() -> None:
    avatars = Settings().avatars
    assert avatars.onnx_intra_op_threads == 1
    assert avatars.opencv_threads == 1


def test_intra_op_threads_setting_reaches_the_session() -> None:
    for threads in (1, 2):
        detector = open_detector(AvatarSettings(onnx_intra_op_threads=threads), prefer_gpu=False)
        assert detector.intra_op_threads == threads


def test_opencv_threads_setting_reaches_opencv() -> None:
    before = cv2.getNumThreads()
    try:
        set_opencv_threads(1)
        assert cv2.getNumThreads() == 1
        set_opencv_threads(2)
        assert cv2.getNumThreads() == 2
        set_opencv_threads(0)
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_compose_applies_the_thread_settings(tmp_path: Path) -> None:
    from pipeline.compose import build_engine, build_stages

    settings = Settings(
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'x.db'}"),
        avatars=AvatarSettings(onnx_intra_op_threads=2, opencv_threads=1),
        review=ReviewSettings(image_dir=tmp_path / "images"),
    )
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)
        stage = build_stages(settings, build_engine(settings))[0]
        assert stage.name == "avatar"
        detector = stage.detector  # type: ignore[attr-defined]
        assert isinstance(detector, OnnxDetector)
        assert detector.intra_op_threads == 2
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_manifest_names_the_default_file_and_each_variant_has_its_own_thresholds() -> None:
    default = MANIFEST["model_file"]
    assert (DEFAULT_MODEL_DIR / default).stat().st_size <= 20_000_000
    variants = MANIFEST["variants"]
    assert set(variants) == {FP32_MODEL_FILE, INT8_FILE}
    for name, variant in variants.items():
        assert (DEFAULT_MODEL_DIR / name).stat().st_size <= 20_000_000
        assert 0.0 < variant["threshold"] < 1.0 and 0.0 < variant["cnn_threshold"] < 1.0
        assert "heldout_test" in variant["metrics"]
    assert MANIFEST["threshold"] == variants[default]["threshold"]
    assert MANIFEST["cnn_threshold"] == variants[default]["cnn_threshold"]
    assert MANIFEST["metrics"]["heldout_test"] == variants[default]["metrics"]["heldout_test"]
    calibration = variants[INT8_FILE]["quantization"]["calibration"]
    assert set(calibration["counts"]).isdisjoint(MANIFEST["training"]["holdout_sources"])


def test_an_onnx_model_path_loads_that_file_with_its_thresholds() -> None:
    for name in (FP32_MODEL_FILE, INT8_FILE):
        detector = open_detector(
            AvatarSettings(model_path=DEFAULT_MODEL_DIR / name), prefer_gpu=False
        )
        assert detector.model_file == name
        assert detector.threshold == MANIFEST["variants"][name]["threshold"]
        assert detector.cnn_threshold == MANIFEST["variants"][name]["cnn_threshold"]
    shipped = open_detector(AvatarSettings(), prefer_gpu=False)
    assert shipped.model_file == MANIFEST["model_file"]


def test_select_switches_the_default_without_touching_the_models(tmp_path: Path) -> None:
    manifest = json.loads(json.dumps(MANIFEST))
    other = INT8_FILE if manifest["model_file"] == FP32_MODEL_FILE else FP32_MODEL_FILE
    select(manifest, other)
    assert manifest["model_file"] == other
    assert manifest["threshold"] == MANIFEST["variants"][other]["threshold"]
    assert (
        manifest["metrics"]["heldout_test"]
        == MANIFEST["variants"][other]["metrics"]["heldout_test"]
    )


@pytest.fixture(scope="module")
def calibration() -> list[np.ndarray]:
    spec = PreprocessSpec.from_manifest(MANIFEST)
    split = ds.split_by_source(
        ds.read_manifest(ds.faces_dir()),
        MANIFEST["training"]["holdout_sources"],
        seed=int(MANIFEST["training"]["seed"]),
    )
    return calibration_batches(ds.deterministic_sample(split.train, 8, salt="test"), spec, 8)


def test_quantize_model_writes_a_qdq_per_channel_model_that_tracks_fp32(
    tmp_path: Path, calibration: list[np.ndarray]
) -> None:
    fp32 = tmp_path / FP32_MODEL_FILE
    shutil.copy(DEFAULT_MODEL_DIR / FP32_MODEL_FILE, fp32)
    recipe = quantize_model(fp32, tmp_path / INT8_FILE, calibration)
    assert recipe["source_file"] == FP32_MODEL_FILE
    graph = onnx.load(str(tmp_path / INT8_FILE)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    axes = [
        attr.i
        for node in graph.node
        if node.op_type == "DequantizeLinear"
        for attr in node.attribute
        if attr.name == "axis"
    ]
    assert axes, "weights should carry per-channel scales"
    assert (tmp_path / INT8_FILE).stat().st_size < 0.4 * fp32.stat().st_size
    # the head (classifier and output sigmoid) stays float: a quantised probability has 256
    # levels, and every confident score became exactly 1.0
    assert recipe["float_head"] and "/Sigmoid" in recipe["float_head"]
    producers = {out: node for node in graph.node for out in node.output}
    output = producers[graph.output[0].name]
    assert output.op_type == "Sigmoid"
    assert producers[output.input[0]].op_type != "DequantizeLinear"

    manifest = dict(MANIFEST, model_file=INT8_FILE, variants={})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    heldout = [
        r
        for r in ds.read_manifest(ds.faces_dir())
        if r.source in MANIFEST["training"]["holdout_sources"]
    ]
    sample = ds.deterministic_sample(heldout, 24, salt="int8-test")
    images = [ds.load_image(r.path) for r in sample]
    labels = np.array([r.label for r in sample])
    spec = PreprocessSpec.from_manifest(MANIFEST)
    x = preprocess_batch(images, spec)
    scores = {
        name: np.array(OnnxDetector(tmp_path, prefer_gpu=False, model_file=name).score_array(x))
        for name in (FP32_MODEL_FILE, INT8_FILE)
    }
    assert np.corrcoef(scores[FP32_MODEL_FILE], scores[INT8_FILE])[0, 1] > 0.95
    assert roc_auc(labels, scores[INT8_FILE]) > 0.75
    # a quantised output (256 levels) ties the confident scores at both ends and puts every
    # score above ~0.998 at exactly 1.0; with the float head scores only meet where float32
    # runs out of resolution near 1.0 (its sigmoid saturates there), about as in the fp32 file
    ordered = np.sort(scores[INT8_FILE])
    assert len(set(ordered[:8].tolist())) == 8, f"the lowest scores tie: {ordered[:8]}"
    middle = ordered[ordered < 0.999]
    assert len(set(middle.tolist())) == len(middle) >= len(ordered) // 3, ordered
    saturated = {name: int(np.sum(s == 1.0)) for name, s in scores.items()}
    assert saturated[INT8_FILE] <= saturated[FP32_MODEL_FILE] + 2, saturated


def test_decide_threshold_without_an_avatar_stage_is_the_loaded_files() -> None:
    from pipeline.compose import detector_threshold

    assert detector_threshold(None) == MANIFEST["threshold"]
    assert detector_threshold(DEFAULT_MODEL_DIR) == MANIFEST["threshold"]
    for name in (FP32_MODEL_FILE, INT8_FILE):
        expected = MANIFEST["variants"][name]["threshold"]
        assert detector_threshold(DEFAULT_MODEL_DIR / name) == expected


def _activation_scales(path: Path) -> dict[str, float]:
    """The scale of every activation ``QuantizeLinear`` (weights are stored quantised)."""
    graph = onnx.load(str(path)).graph
    init = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    return {
        node.input[0]: float(init[node.input[1]])
        for node in graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in init
    }


def test_percentile_calibration_narrows_ranges_and_named_nodes_stay_float(
    tmp_path: Path, calibration: list[np.ndarray]
) -> None:
    fp32 = tmp_path / FP32_MODEL_FILE
    shutil.copy(DEFAULT_MODEL_DIR / FP32_MODEL_FILE, fp32)
    uneven = [*calibration, calibration[0][:3]]
    minmax = quantize_model(fp32, tmp_path / "minmax.onnx", uneven)
    recipe = quantize_model(
        fp32,
        tmp_path / "pct.onnx",
        uneven,
        method="percentile",
        keep_float=["/stem/"],
        percentile=99.9,
    )
    assert minmax["calibration_method"] == "minmax" and minmax["float_nodes"] == []
    assert recipe["calibration_method"] == "percentile"
    assert "Percentile" in recipe["activations"] and "99.9 " in recipe["activations"]
    assert recipe["float_nodes"] and all("/stem/" in n for n in recipe["float_nodes"])

    wide, narrow = (
        _activation_scales(tmp_path / "minmax.onnx"),
        _activation_scales(tmp_path / "pct.onnx"),
    )
    shared = sorted(set(wide) & set(narrow))
    assert len(shared) > 10
    # cutting the tails never widens a range, and narrows those not capped by ReLU6 at 6
    assert all(narrow[t] <= wide[t] * (1 + 1e-6) for t in shared)
    narrowed = [t for t in shared if narrow[t] < wide[t] * 0.99]
    assert len(narrowed) > 10, narrowed

    graph = onnx.load(str(tmp_path / "pct.onnx")).graph
    producers = {out: node for node in graph.node for out in node.output}
    stem = next(n for n in graph.node if n.op_type == "Conv" and "/stem/" in n.name)
    assert stem.input[1] not in producers or producers[stem.input[1]].op_type != (
        "DequantizeLinear"
    ), "the stem's weights should stay float"
    body = next(n for n in graph.node if n.op_type == "Conv" and "/blocks.0/" in n.name)
    assert producers[body.input[1]].op_type == "DequantizeLinear"

    x = np.concatenate(calibration)
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    scores = [
        np.array(OnnxDetector(tmp_path, prefer_gpu=False, model_file=name).score_array(x))
        for name in (FP32_MODEL_FILE, "pct.onnx")
    ]
    assert np.corrcoef(scores[0], scores[1])[0, 1] > 0.95


def test_equal_batches_recuts_the_same_images() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.random((n, 3, 4, 4), dtype=np.float32) for n in (5, 5, 2)]
    cut = equal_batches(batches)
    assert {len(b) for b in cut} == {4}
    np.testing.assert_array_equal(np.concatenate(cut), np.concatenate(batches))


def test_quantize_refuses_unknown_methods_and_patterns_that_match_nothing(
    tmp_path: Path, calibration: list[np.ndarray]
) -> None:
    fp32 = DEFAULT_MODEL_DIR / FP32_MODEL_FILE
    with pytest.raises(ValueError, match="calibration method"):
        quantize_model(fp32, tmp_path / "x.onnx", calibration, method="entropy")
    with pytest.raises(ValueError, match="/no-such-node/"):
        float_nodes(fp32, ["/stem/", "/no-such-node/"])
    assert not (tmp_path / "x.onnx").exists()


def test_rename_version_keeps_the_weights_version() -> None:
    manifest = {"version": "w1"}
    rename_version(manifest, "w1-int8b")
    assert manifest == {"version": "w1-int8b", "weights_version": "w1"}
    rename_version(manifest, "w1-int8c")
    assert manifest == {"version": "w1-int8c", "weights_version": "w1"}
    with pytest.raises(ValueError):
        rename_version(manifest, "w1-int8c")
