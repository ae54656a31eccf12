"""Rarity weights, pairwise link evidence and the cluster score (pure).

Weight of a shared value (documented in docs/clusters.md)::

    w(kind, n) = prior(kind) * min(1, sqrt(ref(kind) / n))

``n`` is how many accounts showed the value over the long window (7 days by default). The
prior is also the per-kind cap: a value seen on at most ``ref`` accounts weighs its full prior;
beyond, the weight falls like an inverse square root of its count, so a carrier NAT /24 seen
on 5,000 accounts weighs 0.08 of its prior while a device shared by 30 new accounts keeps
0.8 of it. Two accounts are linked when the summed weights of the values they share reach
``Settings.signals.link_threshold``; values weighing less than ``MIN_LINK_WEIGHT`` are not
searched for partners at all (which is what keeps the cost bounded as windows grow).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class KindPrior:
    """Prior weight (and cap) of a feature kind, and the count up to which it keeps it."""

    prior: float
    ref: float


PRIORS: Mapping[str, KindPrior] = {
    "device": KindPrior(1.5, 20),
    "ip24": KindPrior(1.0, 30),
    "ip48": KindPrior(1.0, 30),
    "email_domain": KindPrior(1.0, 50),
    "name_tpl": KindPrior(0.5, 5),
    "user_tpl": KindPrior(0.75, 10),
    "user_shape": KindPrior(0.25, 20),
    "link_domain": KindPrior(2.0, 1000),
    "phash": KindPrior(2.0, 50),
}
PHOTO_MATCH_WEIGHT = 2.5
"""Evidence of a near-duplicate avatar reported by the dedupe stage (one reused photo links)."""
MIN_LINK_WEIGHT = 0.2
"""Values weighing less than this are ignored when searching link partners."""
PROMOTED_KINDS = frozenset({"link_domain"})
INFRA_KINDS = frozenset({"device", "ip24", "ip48", "email_domain", "user_tpl", "name_tpl", "phash"})


COMMON_SHARE = 0.002
"""A value shown by more than this share of the window's accounts is common at any scale."""


def rarity_weight(kind: str, count: int, population: int | None = None,
                  priors: Mapping[str, KindPrior] = PRIORS) -> float:
    """Weight of a value of ``kind`` seen on ``count`` of the ``population`` accounts of the window.

    ``prior * min(1, sqrt(ref / count)) * min(1, sqrt(COMMON_SHARE * population / count))``;
    the second factor only bites in small populations (a demo, the first hours of a stream),
    where no value has had the chance to reach ``ref`` accounts yet.
    """
    spec = priors.get(kind)
    if spec is None:
        return 0.0
    n = max(count, 1)
    weight = spec.prior * min(1.0, math.sqrt(spec.ref / n))
    if population is not None:
        weight *= min(1.0, math.sqrt(max(COMMON_SHARE * population, 2.0) / n))
    return weight


def concentrated(suspects: int, holders: int, min_share: float) -> bool:
    """Whether a value's holders are suspect (AI face or reused photo) often enough for the
    avatar-pair bonus: ``suspects / holders >= min_share`` over one window (``holders`` at
    least 1; ``min_share`` 0 admits every value). A value a campaign promotes is held mostly by
    its synthetic accounts; a popular honest value is held by suspects at the detector's
    false-positive rate, however many of them share it."""
    return suspects >= min_share * max(holders, 1)


def pair_evidence(shared: Iterable[float]) -> float:
    """Evidence that two accounts belong together: the sum of the weights of what they share."""
    return float(sum(shared))


@dataclass(frozen=True)
class ClusterStats:
    """What the cluster score is built from; counts are numbers of member accounts."""

    size: int
    ai_faces: int = 0
    reused_photos: int = 0
    burst_members: int = 0
    promoted_max: int = 0
    """Members sharing the cluster's most common (non-common) promoted link domain."""
    infra_max: int = 0
    """Members sharing the cluster's most common infrastructure value (device, IP range, ...)."""


@dataclass(frozen=True)
class ScoreParts:
    size: float
    ai: float
    reused: float
    burst: float
    promoted: float
    infra: float
    score: float


SIZE_SCALE = 3.0
SHARE_WEIGHTS = {"ai": 0.9, "reused": 0.85, "promoted": 0.25, "burst": 0.2, "infra": 0.3}


def score_parts(stats: ClusterStats) -> ScoreParts:
    """The cluster score in [0, 1] and its parts.

    ``size_factor = 1 - exp(-(size - 1) / 3)`` (0 for a lone account, 0.49 at 3, 0.74 at 5);
    each share (AI faces, reused photos, promoted domain, burst, infrastructure) is members
    showing it / size; they combine as a noisy-OR with the weights in ``SHARE_WEIGHTS``;
    ``score = size_factor * noisy_or``.
    """
    size = max(stats.size, 1)
    size_factor = 1.0 - math.exp(-(size - 1) / SIZE_SCALE)
    shares = {
        "ai": min(1.0, stats.ai_faces / size),
        "reused": min(1.0, stats.reused_photos / size),
        "burst": min(1.0, stats.burst_members / size),
        "promoted": min(1.0, stats.promoted_max / size),
        "infra": min(1.0, stats.infra_max / size),
    }
    miss = 1.0
    for name, share in shares.items():
        miss *= 1.0 - SHARE_WEIGHTS[name] * share
    score = max(0.0, min(1.0, size_factor * (1.0 - miss)))
    return ScoreParts(
        size_factor,
        shares["ai"],
        shares["reused"],
        shares["burst"],
        shares["promoted"],
        shares["infra"],
        score,
    )


def cluster_score(stats: ClusterStats) -> float:
    """Score in [0, 1] of a cluster; see :func:`score_parts`."""
    return score_parts(stats).score
