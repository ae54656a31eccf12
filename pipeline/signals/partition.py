"""The order-independent cluster partition of a window of accounts (pure).

The streaming stage weighs a shared value when the later of two accounts is *processed*, with
the window counts stored at that moment, so the partition it builds depends on how partitions
were interleaved. This module recomputes links from final, stored facts only: every shared value
of a pair is weighed with the window ending at the moment the value became shared (the later
holder's first sight of it), counted from the final counters. Same link rule and weights as the
stage (``pipeline/signals/score.py``): values weighing at least ``MIN_LINK_WEIGHT`` and seen on
``2..max_partners`` accounts, summed per pair, a reused photo worth ``PHOTO_MATCH_WEIGHT``, the
avatar-pair bonus when both accounts are suspect and share a value whose holders are suspect often
enough (``bonus_min_suspect_share``, counted in the same window as the weight), linked at
``link_threshold``. Burst members are
accounts linked to an account created within ``burst_s`` of their own creation (symmetric).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.signals.score import MIN_LINK_WEIGHT, PHOTO_MATCH_WEIGHT

ValueKey = tuple[str, str]
Pair = tuple[str, str]


@dataclass(frozen=True)
class Holding:
    """One account showing one value since ``seen_s``."""

    account_id: str
    kind: str
    value: str
    label: str
    seen_s: int


@dataclass(frozen=True)
class LinkRule:
    link_threshold: float
    avatar_pair_bonus: float
    max_partners: int
    long_window_s: int
    burst_s: int
    bonus_min_suspect_share: float = 0.0
    """0: every suspect pair gets the avatar-pair bonus (no suspect counts needed)."""


@dataclass
class PairEvidence:
    """Summed evidence of one pair and the labels of what it shares."""

    weight: float = 0.0
    shared: list[str] = field(default_factory=list)
    concentrated: bool = False
    """The pair shares a value whose holders are suspect often enough for the avatar-pair
    bonus (always true without a ``concentrated_at`` test)."""


def weighing_times(holdings: Iterable[Holding]) -> dict[ValueKey, set[int]]:
    """For each value held by at least two accounts, the times at which :func:`pair_evidence`
    may weigh it (every holder's first sight but the earliest)."""
    by_value: dict[ValueKey, list[int]] = defaultdict(list)
    for h in holdings:
        by_value[(h.kind, h.value)].append(h.seen_s)
    return {key: set(sorted(times)[1:]) for key, times in by_value.items() if len(times) > 1}


def pair_evidence(
    holdings: Iterable[Holding],
    weight_at: Callable[[ValueKey, int], tuple[float, int]],
    rule: LinkRule,
    photo_pairs: Iterable[Pair] = (),
    concentrated_at: Callable[[ValueKey, int], bool] | None = None,
) -> dict[Pair, PairEvidence]:
    """Evidence of every pair of accounts that share something.

    ``weight_at(key, t)`` returns the value's rarity weight and its count in the window ending
    at ``t``. A pair sharing a value is weighed at the later holder's first sight ``t``, only when
    the earlier holder's is within the long window before ``t`` (the stage searches partners
    ``since t - long window``). ``concentrated_at(key, t)`` tells whether the value's suspect
    share in that window admits the avatar-pair bonus (None: every pair is admitted)."""
    admit_all = concentrated_at is None
    by_value: dict[ValueKey, list[Holding]] = defaultdict(list)
    for h in holdings:
        by_value[(h.kind, h.value)].append(h)
    out: dict[Pair, PairEvidence] = {}
    for key in sorted(by_value):
        held = sorted(by_value[key], key=lambda h: (h.seen_s, h.account_id))
        if len(held) < 2:
            continue
        for j in range(1, len(held)):
            later = held[j]
            t = later.seen_s
            weight, count = weight_at(key, t)
            if weight < MIN_LINK_WEIGHT or not 1 < count <= rule.max_partners:
                continue
            hot = admit_all or (concentrated_at is not None and concentrated_at(key, t))
            since = t - rule.long_window_s
            other = later.account_id
            for i in range(j):
                earlier = held[i]
                if earlier.seen_s < since or earlier.account_id == other:
                    continue
                pair = (earlier.account_id, other) if earlier.account_id < other else (
                    other, earlier.account_id)
                ev = out.get(pair)
                if ev is None:
                    ev = out[pair] = PairEvidence(concentrated=admit_all)
                ev.weight += weight
                ev.shared.append(later.label)
                ev.concentrated = ev.concentrated or hot
    for a, b in photo_pairs:
        if a == b:
            continue
        pair = (min(a, b), max(a, b))
        ev = out.setdefault(pair, PairEvidence(concentrated=admit_all))
        ev.weight += PHOTO_MATCH_WEIGHT
        ev.shared.append("reused photo")
    return out


def links(
    evidence: Mapping[Pair, PairEvidence], suspect: Callable[[str], bool], rule: LinkRule
) -> dict[Pair, tuple[float, list[str]]]:
    """Linked pairs with their total evidence (rounded as the stage stores it) and what they
    share: the stage's rule, ``x + bonus`` when both accounts are suspect and the pair's
    evidence is ``concentrated``, at the threshold."""
    bonus = rule.avatar_pair_bonus
    out: dict[Pair, tuple[float, list[str]]] = {}
    for (a, b), ev in evidence.items():
        x = ev.weight
        if x + bonus < rule.link_threshold:
            continue
        both = bool(bonus) and ev.concentrated and suspect(a) and suspect(b)
        total = x + (bonus if both else 0.0)
        if total >= rule.link_threshold:
            shared = sorted(set(ev.shared))
            if both:
                shared.append("both avatars AI-generated or reused")
            out[(a, b)] = (round(total, 3), shared)
    return out


def components(pairs: Iterable[Pair]) -> list[set[str]]:
    """Connected components of the linked pairs (each of at least two accounts)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, set[str]] = defaultdict(set)
    for x in list(parent):
        groups[find(x)].add(x)
    return sorted(groups.values(), key=min)


def burst_members(
    linked: Iterable[Pair], created_s: Mapping[str, int], burst_s: int
) -> set[str]:
    """Accounts linked to an account created within ``burst_s`` seconds of their own creation."""
    out: set[str] = set()
    for a, b in linked:
        if abs(created_s[a] - created_s[b]) <= burst_s:
            out.update((a, b))
    return out
