"""Pure re-clustering rules: pair evidence, links, components, burst members."""

from __future__ import annotations

import random

from pipeline.signals.partition import (
    Holding,
    LinkRule,
    burst_members,
    components,
    links,
    pair_evidence,
    weighing_times,
)
from pipeline.signals.score import PHOTO_MATCH_WEIGHT

RULE = LinkRule(link_threshold=2.2, avatar_pair_bonus=1.25, max_partners=100,
                long_window_s=7 * 86400, burst_s=3600)


def _weights(table: dict[tuple[str, int], tuple[float, int]]):  # type: ignore[no-untyped-def]
    def weight_at(key: tuple[str, str], t: int) -> tuple[float, int]:
        return table.get((key[1], t), (0.0, 1))

    return weight_at


def test_a_value_is_weighed_at_the_later_holders_first_sight_and_input_order_is_irrelevant(
) -> None:
    holdings = [Holding("a", "device", "d1", "device:d1", 100),
                Holding("b", "device", "d1", "device:d1", 200),
                Holding("c", "device", "d1", "device:d1", 300)]
    weight_at = _weights({("d1", 200): (1.5, 2), ("d1", 300): (1.2, 3)})
    first = pair_evidence(holdings, weight_at, RULE)
    assert {p: round(e.weight, 6) for p, e in first.items()} == {
        ("a", "b"): 1.5, ("a", "c"): 1.2, ("b", "c"): 1.2}
    shuffled = holdings[:]
    random.Random(3).shuffle(shuffled)
    again = pair_evidence(shuffled, weight_at, RULE)
    assert {p: e.weight for p, e in again.items()} == {p: e.weight for p, e in first.items()}
    assert weighing_times(holdings) == {("device", "d1"): {200, 300}}


def test_light_common_and_out_of_window_values_do_not_count() -> None:
    week = RULE.long_window_s
    holdings = [Holding("a", "ip24", "n", "ip24:n", 0), Holding("b", "ip24", "n", "ip24:n", 10),
                Holding("a", "device", "x", "device:x", 0),
                Holding("b", "device", "x", "device:x", week + 1),
                Holding("a", "email_domain", "m", "m", 0),
                Holding("b", "email_domain", "m", "m", 5)]
    weight_at = _weights({("n", 10): (0.1, 2), ("x", week + 1): (1.5, 2), ("m", 5): (1.0, 101)})
    assert pair_evidence(holdings, weight_at, RULE) == {}


def test_link_rule_bonus_photo_and_components() -> None:
    holdings = [Holding("a", "device", "d", "device:d", 0), Holding("b", "device", "d", "device:d",
                                                                    1)]
    ev = pair_evidence(holdings, _weights({("d", 1): (1.0, 2)}), RULE, photo_pairs=[("d", "c")])
    assert ev[("c", "d")].weight == PHOTO_MATCH_WEIGHT
    suspects = {"a", "b"}
    linked = links(ev, lambda x: x in suspects, RULE)
    assert linked[("a", "b")] == (2.25, ["device:d", "both avatars AI-generated or reused"])
    assert linked[("c", "d")] == (2.5, ["reused photo"])
    assert links(ev, lambda x: x == "a", RULE).keys() == {("c", "d")}
    assert components([("b", "c"), ("x", "y"), ("a", "b")]) == [{"a", "b", "c"}, {"x", "y"}]
    assert burst_members([("a", "b"), ("c", "d")], {"a": 0, "b": 3600, "c": 0, "d": 3601},
                         3600) == {"a", "b"}
