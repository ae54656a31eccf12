"""The detector trainer's draw weights: fixed source shares and the sqrt rule for the rest.

Pure: builds ``FaceRecord`` lists in memory (no images read), so the sampling that decides how
much of the training signal comes from each generator is checked without torch.
"""

from __future__ import annotations

import math

import pytest
from face_records import face_records

from pipeline.avatars import dataset as ds

SIZES = {"fake/a": 400, "fake/b": 100, "fake/c": 25, "real/x": 900, "real/y": 100}


def _mass(records: list[ds.FaceRecord], weights: list[float]) -> dict[str, float]:
    mass: dict[str, float] = {}
    for record, weight in zip(records, weights, strict=True):
        mass[record.source] = mass.get(record.source, 0.0) + weight
    return mass


def test_sqrt_rule_gives_each_class_half_and_sources_sqrt_of_their_size() -> None:
    records = face_records(SIZES)
    mass = _mass(records, ds.sampling_weights(records))
    assert mass["fake/a"] + mass["fake/b"] + mass["fake/c"] == pytest.approx(1.0)
    assert mass["real/x"] + mass["real/y"] == pytest.approx(1.0)
    assert mass["fake/a"] / mass["fake/b"] == pytest.approx(math.sqrt(400 / 100))
    assert mass["real/x"] / mass["real/y"] == pytest.approx(3.0)


def test_fixed_share_is_exact_and_the_rest_keeps_sqrt_proportions() -> None:
    records = face_records(SIZES)
    weights = ds.sampling_weights(records, ds.parse_shares("fake/c=0.4"))
    mass = _mass(records, weights)
    assert mass["fake/c"] == pytest.approx(0.4)
    assert mass["fake/a"] + mass["fake/b"] == pytest.approx(0.6)
    assert mass["fake/a"] / mass["fake/b"] == pytest.approx(2.0)
    assert mass["real/x"] / mass["real/y"] == pytest.approx(3.0)
    inside_c = {w for r, w in zip(records, weights, strict=True) if r.source == "fake/c"}
    assert len(inside_c) == 1


def test_bad_shares_are_refused() -> None:
    records = face_records(SIZES)
    with pytest.raises(ValueError):
        ds.sampling_weights(records, {"fake/missing": 0.2})
    with pytest.raises(ValueError):
        ds.sampling_weights(records, ds.parse_shares("fake/a=0.6,fake/b=0.5"))
    assert ds.parse_shares("") == {}
    assert ds.parse_shares("fake/a=0.25, real/x=0.5") == {"fake/a": 0.25, "real/x": 0.5}


def test_default_holdout_keeps_one_stylegan2_scrape_out_and_trains_on_the_other() -> None:
    assert "fake/bhk" in ds.DEFAULT_HOLDOUT
    assert "fake/bhkcv" not in ds.DEFAULT_HOLDOUT
    assert {"real/lfw", "real/celeba", "real/amfd"} <= set(ds.DEFAULT_HOLDOUT)
