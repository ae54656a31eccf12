"""Mixed precision: which units of the detector a quantisation keeps float, and how it is chosen.

The scan runs the real quantiser and onnxruntime on the committed fp32 file with a small
calibration and image sample (validation images; no labels are read).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.avatars import dataset as ds
from pipeline.avatars import precision
from pipeline.avatars.detector import DEFAULT_MODEL_DIR, FP32_MODEL_FILE
from pipeline.avatars.preprocess import PreprocessSpec
from pipeline.avatars.quantize import calibration_batches, float_nodes

MANIFEST = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
FP32 = DEFAULT_MODEL_DIR / FP32_MODEL_FILE


def test_units_of_the_exported_graph_are_the_stem_each_block_and_the_head_conv() -> None:
    units = precision.float_units(precision.body_names(FP32))
    assert units == ["stem"] + [f"blocks.{i}" for i in range(16)] + ["head"]
    assert precision.float_units(["/Sigmoid", "/inner/Flatten"]) == []


def test_a_unit_pattern_matches_only_that_units_nodes() -> None:
    one = float_nodes(FP32, [precision.unit_pattern("blocks.1")])
    assert one and all("/blocks.1/" in n for n in one)
    assert not any("/blocks.1" + d in n for n in one for d in "0123456789")
    stem = float_nodes(FP32, [precision.unit_pattern("stem")])
    assert {n.split("/")[-1] for n in stem} == {"Conv", "Clip"}


def test_mean_abs_logit_gap() -> None:
    p = np.array([0.5, 0.9, 0.01])
    assert precision.mean_abs_logit_gap(p, p) == 0.0
    q = np.array([1.0 / (1.0 + math.exp(-1.0)), 0.9, 0.01])
    assert precision.mean_abs_logit_gap(p, q) == pytest.approx(1.0 / 3.0)
    assert precision.mean_abs_logit_gap(q, p) == precision.mean_abs_logit_gap(p, q)
    # saturated probabilities are clipped, not infinite
    assert np.isfinite(precision.mean_abs_logit_gap(np.array([1.0]), np.array([0.0])))


def test_greedy_order_and_budget_cut() -> None:
    gains = {"blocks.3": 0.05, "blocks.0": 0.06, "head": -0.01, "blocks.9": 0.0}
    assert precision.greedy_order(gains) == ["blocks.0", "blocks.3"]
    # the first prefix over the budget ends the choice, even if a longer one is cheaper
    assert precision.longest_within([0.1, 0.5, 0.9, 0.3], 0.8) == 2
    assert precision.longest_within([0.9], 0.8) == 0
    assert precision.longest_within([], 0.8) == 0


def test_scan_measures_gains_and_keeps_the_base_when_nothing_fits() -> None:
    spec = PreprocessSpec.from_manifest(MANIFEST)
    split = ds.model_split(MANIFEST["training"])
    calibration = calibration_batches(ds.deterministic_sample(split.train, 8, salt="t"), spec, 8)
    images = [ds.load_image(r.path) for r in ds.deterministic_sample(split.val, 16, salt="t")]
    result = precision.scan(
        FP32,
        calibration,
        images,
        spec,
        keep_float=["/stem/"],
        budget_ms=-1.0,
        units=["blocks.0", "blocks.15"],
    )
    assert result["images"] == len(images) == 32
    assert set(result["unit_gains"]) == {"blocks.0", "blocks.15"}
    assert result["base"]["gap"] > 0.0
    # blocks.0 sits right after the image: kept float, the scores move toward the fp32 file's
    assert result["unit_gains"]["blocks.0"] > 0.0
    assert result["order"][0] == "blocks.0"
    first = result["prefixes"][0]
    assert first["units"] == ["blocks.0"] and first["ms"] > 0.0 and first["base_ms"] > 0.0
    # a negative budget admits no prefix: the scan stops after the first and keeps the base
    assert len(result["prefixes"]) == 1
    assert result["chosen_keep_float"] == ["/stem/"]
    assert result["chosen_gap"] == result["base"]["gap"]
