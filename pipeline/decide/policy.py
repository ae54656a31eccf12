"""The decision policy: a versioned declarative file turned into a pure function.

``Policy.decide(signals)`` maps the fused signals of one event to an action, a priority, a
score and human-readable reasons. No I/O here; ``load_policy`` only parses the file's text.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.types import Action, Envelope

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
SEVERITY: dict[str, int] = {"allow": 0, "review": 1, "challenge": 2, "disable": 3}
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
SIGNALS = (
    "avatar_score",
    "avatar_ai",
    "avatar_refused",
    "face_found",
    "bank_matches",
    "account_matches",
    "best_match_distance",
    "cluster_score",
    "cluster_size",
    "stolen_photo",
)


class PolicyError(ValueError):
    """The policy file is malformed; raised at load time, never while deciding."""


@dataclass(frozen=True)
class Condition:
    signal: str
    op: str
    value: Any

    def holds(self, signals: Mapping[str, Any]) -> bool:
        actual = signals.get(self.signal)
        if actual is None:
            return False
        return OPS[self.op](actual, self.value)


@dataclass(frozen=True)
class Rule:
    id: str
    when: tuple[Condition, ...]
    action: Action
    priority: int
    reason: str


@dataclass(frozen=True)
class Verdict:
    action: Action
    priority: int
    score: float
    reasons: tuple[str, ...]
    rule_ids: tuple[str, ...]
    queue: str | None


@dataclass(frozen=True)
class Policy:
    version: str
    rules: tuple[Rule, ...]
    score_weights: Mapping[str, float]
    review_queues: tuple[tuple[tuple[Condition, ...], str], ...]

    def decide(self, signals: Mapping[str, Any]) -> Verdict:
        """Apply every rule; the most severe action wins. Pure and total."""
        matched = [r for r in self.rules if all(c.holds(signals) for c in r.when)]
        action: Action = "allow"
        for rule in matched:
            if SEVERITY[rule.action] > SEVERITY[action]:
                action = rule.action
        priority = max((r.priority for r in matched), default=0)
        reasons = tuple(_render(r.reason, signals) for r in matched)
        score = 0.0
        for name, weight in self.score_weights.items():
            value = signals.get(name)
            if isinstance(value, bool):
                value = 1.0 if value else 0.0
            if isinstance(value, int | float):
                score = max(score, weight * float(value))
        queue = None
        if action != "allow":
            queue = next(
                (q for conds, q in self.review_queues if all(c.holds(signals) for c in conds)),
                "accounts",
            )
        return Verdict(
            action,
            priority,
            min(1.0, round(score, 4)),
            reasons,
            tuple(r.id for r in matched),
            queue,
        )


class _Defaulting(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def _render(template: str, signals: Mapping[str, Any]) -> str:
    try:
        return template.format_map(_Defaulting(signals))
    except (ValueError, TypeError):
        return template


def _conditions(raw: Sequence[Mapping[str, Any]], where: str) -> tuple[Condition, ...]:
    out = []
    for item in raw:
        if item.get("signal") not in SIGNALS:
            raise PolicyError(f"{where}: unknown signal {item.get('signal')!r}")
        if item.get("op") not in OPS:
            raise PolicyError(f"{where}: unknown operator {item.get('op')!r}")
        out.append(Condition(item["signal"], item["op"], item["value"]))
    return tuple(out)


def parse_policy(text: str) -> Policy:
    """Parse and check a policy document; raises :class:`PolicyError` when malformed."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or "version" not in doc or "rules" not in doc:
        raise PolicyError("policy needs `version` and `rules`")
    rules = []
    seen: set[str] = set()
    for i, raw in enumerate(doc["rules"]):
        rid = str(raw.get("id", f"rule-{i}"))
        if rid in seen:
            raise PolicyError(f"duplicate rule id {rid}")
        seen.add(rid)
        if raw.get("action") not in SEVERITY:
            raise PolicyError(f"rule {rid}: unknown action {raw.get('action')!r}")
        rules.append(
            Rule(
                rid,
                _conditions(raw.get("when", []), rid),
                raw["action"],
                int(raw.get("priority", 0)),
                str(raw.get("reason", rid)),
            )
        )
    queues = tuple(
        (_conditions(q.get("when", []), f"queue {q.get('queue')}"), str(q["queue"]))
        for q in doc.get("review_queues", [])
    )
    weights = {str(k): float(v) for k, v in (doc.get("score_weights") or {}).items()}
    for name in weights:
        if name not in SIGNALS:
            raise PolicyError(f"score_weights: unknown signal {name!r}")
    return Policy(str(doc["version"]), tuple(rules), weights, queues)


def load_policy(path: Path | None = None) -> Policy:
    return parse_policy((path or DEFAULT_POLICY).read_text(encoding="utf-8"))


def signals_of(envelope: Envelope, ai_threshold: float = 0.5) -> dict[str, Any]:
    """The flat signal dictionary that policy conditions read, from one envelope.

    ``avatar_ai`` is the avatar score against the detector's calibrated threshold (the
    manifest's, passed in by the composition root), so the policy needs no model-specific
    number."""
    avatar = envelope.avatar
    matches = envelope.matches or ()
    bank = [m for m in matches if m.source == "bank"]
    others = {m.account_id for m in matches if m.source == "account"}
    cluster = envelope.cluster
    signals: dict[str, Any] = {
        "avatar_refused": bool(avatar and avatar.status == "refused"),
        "bank_matches": len(bank),
        "account_matches": len(others),
        "stolen_photo": bool(bank),
        "cluster_score": cluster.cluster_score if cluster and cluster.cluster_id else 0.0,
        "cluster_size": cluster.size if cluster and cluster.cluster_id else 1,
    }
    if avatar and avatar.status == "scored":
        signals["avatar_score"] = avatar.score
        signals["avatar_ai"] = avatar.score is not None and avatar.score >= ai_threshold
        signals["face_found"] = avatar.face_found
    if matches:
        signals["best_match_distance"] = min(m.distance for m in matches)
    return signals


def evidence_of(envelope: Envelope) -> dict[str, Any]:
    """What a reviewer (and the decision record) sees of the signals behind a decision."""
    avatar = envelope.avatar
    return {
        "avatar": avatar.to_dict() if avatar else None,
        "matches": [m.to_dict() for m in envelope.matches or ()],
        "cluster": envelope.cluster.to_dict() if envelope.cluster else None,
    }
