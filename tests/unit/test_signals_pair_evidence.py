"""The pruned pair-evidence sum equals the plain sum over every holder of every value."""

from __future__ import annotations

import random
from collections import defaultdict

from pipeline.signals.features import Feature
from pipeline.signals.score import PHOTO_MATCH_WEIGHT
from pipeline.signals.stage import _Account, _pair_evidence


def _plain(
    acc: _Account, held: list[tuple[Feature, set[str], float]], threshold: float, bonus: float
) -> dict[str, float]:
    ev: dict[str, float] = defaultdict(float)
    for _f, others, w in held:
        for other in others:
            ev[other] += w
    for other in acc.photo_partners:
        ev[other] += PHOTO_MATCH_WEIGHT
    ev.pop(acc.account_id, None)
    return {b: x for b, x in ev.items() if x + bonus >= threshold}


def test_pruned_evidence_equals_plain_sum() -> None:
    rng = random.Random(5)
    population = [f"a{i}" for i in range(300)]
    for case in range(400):
        me = rng.choice(population)
        held = []
        for j in range(rng.randint(0, 9)):
            n = rng.choice([1, 2, 3, 5, 20, 150, 300])
            others = set(rng.sample(population, n)) | ({me} if rng.random() < 0.8 else set())
            weight = rng.choice([0.2, 0.35, 0.5, 0.9, 1.1, 1.5, 2.2]) * rng.uniform(0.5, 1.0)
            held.append((Feature("k", f"v{case}-{j}", "l"), others, weight))
        photo = set(rng.sample(population, rng.choice([0, 0, 1, 2])))
        acc = _Account(me, set(), {}, 0, 0, None, False, False, photo)
        for threshold, bonus in ((2.2, 1.25), (2.2, 0.0), (1.0, 0.5)):
            assert _pair_evidence(acc, held, threshold, bonus) == _plain(
                acc, held, threshold, bonus
            )
