"""What the trainer reports after training (``evaluate.training_metrics``): validation only,
unless the held-out report is asked for. Held-out numbers seen right after training leaked into
later choices twice (docs/model.md, "Selection"), so by default no held-out image is read.

Uses the tiny ONNX model of the hostile-input tests and a few real validation images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hostile.tiny_model import write_tiny_detector

from pipeline.avatars import dataset as ds
from pipeline.avatars.evaluate import OnnxScorer, training_metrics
from pipeline.avatars.preprocess import PreprocessSpec

SIZE = 32


@pytest.fixture(scope="module")
def small_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[OnnxScorer, ds.Split]:
    folder = write_tiny_detector(tmp_path_factory.mktemp("tiny"), size=SIZE)
    spec = PreprocessSpec(SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    scorer = OnnxScorer(folder / "detector.onnx", spec)
    split = ds.split_by_source(
        ds.read_manifest(ds.faces_dir()), ("fake/bhk", "real/lfw", "real/celeba", "real/amfd")
    )
    val = [r for r in split.val if r.label == 1][:4] + [r for r in split.val if r.label == 0][:4]
    test = [r for r in split.test if r.label == 1][:3] + [r for r in split.test if r.label == 0][:3]
    return scorer, dataclasses.replace(split, train=[], val=val, test=test)


def test_no_heldout_image_is_read_unless_asked(
    small_split: tuple[OnnxScorer, ds.Split], tmp_path: Path
) -> None:
    scorer, split = small_split
    missing = [
        dataclasses.replace(r, path=tmp_path / f"gone-{i}.png") for i, r in enumerate(split.test)
    ]
    blind = dataclasses.replace(split, test=missing)
    metrics = training_metrics(scorer, blind, threshold=0.5)
    assert set(metrics) == {"validation"}
    assert metrics["validation"]["clean"]["overall"]["n_fake"] == 4
    with pytest.raises(FileNotFoundError):
        training_metrics(scorer, blind, threshold=0.5, heldout=True)


def test_the_heldout_report_comes_when_asked(small_split: tuple[OnnxScorer, ds.Split]) -> None:
    scorer, split = small_split
    metrics = training_metrics(scorer, split, threshold=0.5, heldout=True)
    assert set(metrics) == {"validation", "heldout_test"}
    overall = metrics["heldout_test"]["clean"]["overall"]
    assert (overall["n_fake"], overall["n_real"]) == (3, 3)
    assert set(metrics["heldout_test"]["clean"]["per_source"]) <= set(split.holdout)
