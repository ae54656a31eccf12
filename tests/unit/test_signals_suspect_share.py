"""The avatar-pair bonus needs a shared value whose holders are suspect well above base rate."""

from __future__ import annotations

from pipeline.signals.partition import Holding, LinkRule, links, pair_evidence
from pipeline.signals.score import concentrated, rarity_weight

RULE = LinkRule(link_threshold=2.2, avatar_pair_bonus=1.25, max_partners=5000,
                long_window_s=7 * 86400, burst_s=3600, bonus_min_suspect_share=0.25)
OLD_RULE = LinkRule(link_threshold=2.2, avatar_pair_bonus=1.25, max_partners=5000,
                    long_window_s=7 * 86400, burst_s=3600)
POPULATION = 500_000


def test_share_threshold() -> None:
    assert not concentrated(25, 1500, 0.25)
    assert not concentrated(2, 1500, 0.25)
    assert concentrated(240, 300, 0.25)
    assert concentrated(2, 2, 0.25)
    assert concentrated(25, 100, 0.25) and not concentrated(24, 100, 0.25)
    assert concentrated(0, 1500, 0.0)
    assert not concentrated(0, 0, 0.25)


def _pair(value: str) -> list[Holding]:
    return [Holding("a", "link_domain", value, value, 100),
            Holding("b", "link_domain", value, value, 200)]


def _linked(value: str, holders: int, suspects: int, rule: LinkRule) -> bool:
    weight = rarity_weight("link_domain", holders, POPULATION)

    def weight_at(key: tuple[str, str], t: int) -> tuple[float, int]:
        return weight, holders

    def concentrated_at(key: tuple[str, str], t: int) -> bool:
        return concentrated(suspects, holders, rule.bonus_min_suspect_share)

    test = concentrated_at if rule.bonus_min_suspect_share > 0 else None
    evidence = pair_evidence(_pair(value), weight_at, rule, (), test)
    return ("a", "b") in links(evidence, lambda _a: True, rule)


def test_popular_domain_at_base_rate_does_not_bind_two_suspects() -> None:
    weight = rarity_weight("link_domain", 1500, POPULATION)
    assert 2.2 - 1.25 <= weight < 2.2
    assert _linked("localnews-site.com", 1500, 2, OLD_RULE)
    assert not _linked("localnews-site.com", 1500, 23, RULE)


def test_campaign_outlet_with_high_suspect_share_binds_two_suspects() -> None:
    assert _linked("outlet-site.com", 300, 240, RULE)
    assert not _linked("outlet-site.com", 300, 60, LinkRule(**{**vars(RULE),
                                                              "bonus_min_suspect_share": 0.3}))


def test_a_concentrated_value_admits_the_bonus_for_the_whole_pair() -> None:
    holdings = _pair("localnews-site.com") + [Holding("a", "device", "d", "device:d", 100),
                                             Holding("b", "device", "d", "device:d", 200)]
    weights = {"localnews-site.com": (1.0, 1500), "d": (0.3, 2)}

    def weight_at(key: tuple[str, str], t: int) -> tuple[float, int]:
        return weights[key[1]]

    def concentrated_at(key: tuple[str, str], t: int) -> bool:
        return key[1] == "d"

    evidence = pair_evidence(holdings, weight_at, RULE, (), concentrated_at)
    assert evidence[("a", "b")].concentrated
    got = links(evidence, lambda _a: True, RULE)
    assert got[("a", "b")][0] == round(1.0 + 0.3 + 1.25, 3)
    assert "both avatars AI-generated or reused" in got[("a", "b")][1]
    assert links(evidence, lambda a: a == "a", RULE) == {}


def test_photo_pair_without_shared_values_gets_no_bonus_under_the_share_rule() -> None:
    got = links(pair_evidence([], lambda k, t: (0.0, 1), RULE, [("a", "b")], lambda k, t: True),
                lambda _a: True, RULE)
    assert got[("a", "b")][0] == 2.5
    old = links(pair_evidence([], lambda k, t: (0.0, 1), OLD_RULE, [("a", "b")]),
                lambda _a: True, OLD_RULE)
    assert old[("a", "b")][0] == 3.75
