"""Band arithmetic: exact recall at the radius boundary for every band split."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.dedupe.bands import BandPlan, from_signed64, hamming, to_signed64


def flip(value: int, positions: list[int]) -> int:
    for p in positions:
        value ^= 1 << p
    return value


def found(plan: BandPlan, stored: int, query: int) -> bool:
    """What an exact-match band index returns: shares a probed value in some band."""
    s = plan.split(stored)
    return any(s[i] in values for i, values in enumerate(plan.probes(query)))


@pytest.mark.parametrize("radius", range(0, 7))
def test_every_split_finds_distance_r(radius: int) -> None:
    rng = random.Random(radius)
    for bands in range(1, radius + 2):
        plan = BandPlan(bits=64, bands=bands, radius=radius)
        if plan.probe_radius > 2:
            continue  # C(band width, >2) probes: a valid plan, but too many to enumerate here
        for _ in range(50):
            stored = rng.getrandbits(64)
            query = flip(stored, rng.sample(range(64), radius))
            assert hamming(stored, query) == radius
            assert found(plan, stored, query), (bands, radius)


def test_r_plus_one_spread_over_bands_is_not_a_candidate() -> None:
    for radius in range(0, 7):
        for bands in range(1, radius + 2):
            plan = BandPlan(bits=64, bands=bands, radius=radius)
            if plan.probe_radius > 2:
                continue
            s = plan.probe_radius
            # put probe_radius + 1 differing bits in every band: nothing can be a candidate
            positions: list[int] = []
            for shift, width in zip(plan.shifts, plan.widths, strict=True):
                if width < s + 1:
                    break
                positions.extend(shift + k for k in range(s + 1))
            else:
                stored = random.Random(bands).getrandbits(64)
                query = flip(stored, positions)
                assert not found(plan, stored, query)
                if len(positions) == radius + 1:
                    assert hamming(stored, query) == radius + 1


def test_classic_split_r_plus_one_bands_misses_r_plus_one() -> None:
    for radius in range(0, 7):
        plan = BandPlan(bits=64, bands=radius + 1, radius=radius)
        assert plan.probe_radius == 0
        stored = 0x0123456789ABCDEF
        positions = [shift for shift in plan.shifts]
        query = flip(stored, positions)
        assert hamming(stored, query) == radius + 1
        assert not found(plan, stored, query)


def test_split_covers_all_bits_and_array_agrees() -> None:
    rng = random.Random(3)
    for bands in (1, 3, 5, 9):
        plan = BandPlan(bits=64, bands=bands, radius=4)
        assert sum(plan.widths) == 64
        values = [rng.getrandbits(64) for _ in range(50)]
        arr = plan.split_array(np.array(values, dtype=np.uint64))
        for v, row in zip(values, arr, strict=True):
            assert tuple(int(x) for x in row) == plan.split(v)
            rebuilt = 0
            for band, width in zip(plan.split(v), plan.widths, strict=True):
                rebuilt = (rebuilt << width) | band
            assert rebuilt == v


def test_probe_count_and_signed_roundtrip() -> None:
    plan = BandPlan(bits=64, bands=3, radius=4)
    assert plan.probe_radius == 1
    assert [len(p) for p in plan.probes(0)] == [w + 1 for w in plan.widths]
    for v in (0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1):
        assert from_signed64(to_signed64(v)) == v
        assert -(1 << 63) <= to_signed64(v) < (1 << 63)


def test_invalid_plans_refused() -> None:
    with pytest.raises(ValueError):
        BandPlan(bits=64, bands=0, radius=1)
    with pytest.raises(ValueError):
        BandPlan(bits=64, bands=3, radius=-1)
