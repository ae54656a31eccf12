"""The decision policy: rules, severity, reasons, queues, and refusal of malformed files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.decide.policy import PolicyError, load_policy, parse_policy, signals_of
from pipeline.types import AccountEvent, AvatarResult, ClusterSignal, Envelope, PhotoMatch

EVENT = AccountEvent(
    event_type="account.created.v1",
    event_id="e1",
    occurred_at=datetime(2026, 11, 29, tzinfo=UTC),
    account_id="a1",
)


def test_committed_policy_loads_and_has_a_version() -> None:
    policy = load_policy()
    assert policy.version
    assert {r.action for r in policy.rules} <= {"allow", "review", "challenge", "disable"}


def test_clean_account_is_allowed_with_no_reasons() -> None:
    env = Envelope(
        EVENT, AvatarResult(status="scored", score=0.02, face_found=True), (), ClusterSignal.none()
    )
    verdict = load_policy().decide(signals_of(env))
    assert verdict.action == "allow"
    assert verdict.reasons == ()
    assert verdict.queue is None
    assert verdict.score == pytest.approx(0.8 * 0.02)


def test_most_severe_action_wins_and_all_reasons_are_kept() -> None:
    env = Envelope(
        EVENT,
        AvatarResult(status="scored", score=0.97, face_found=True),
        (),
        ClusterSignal("c1", cluster_score=0.9, size=12),
    )
    verdict = load_policy().decide(signals_of(env, ai_threshold=0.95))
    assert verdict.action == "disable"
    assert verdict.priority == 90
    assert any("12 accounts" in r for r in verdict.reasons)
    assert any("AI-generated" in r for r in verdict.reasons)
    assert verdict.queue == "clusters"


def test_bank_match_challenges_and_goes_to_stolen_photo_queue() -> None:
    match = PhotoMatch.from_bank("b7", "stolen: model portfolio", 3, "mirror", "phash")
    env = Envelope(EVENT, AvatarResult(status="scored", score=0.1), (match,), ClusterSignal.none())
    verdict = load_policy().decide(signals_of(env))
    assert verdict.action == "challenge"
    assert verdict.queue == "stolen-photos"
    assert "distance 3" in verdict.reasons[0]


def test_missing_signal_never_satisfies_a_condition() -> None:
    policy = parse_policy("""
version: t1
rules:
  - {id: r, when: [{signal: avatar_score, op: ">=", value: 0.0}], action: review, reason: x}
""")
    assert policy.decide({}).action == "allow"
    assert policy.decide({"avatar_score": 0.0}).action == "review"


@pytest.mark.parametrize(
    "text",
    [
        "version: x",
        "rules: []",
        "version: x\nrules: [{id: a, action: ban}]",
        "version: x\nrules: [{id: a, action: review, when: [{signal: nope, op: '>=', value: 1}]}]",
        "version: x\nrules: [{id: a, action: review, when: [{signal: cluster_score, op: '~', value: 1}]}]",  # noqa: E501
        "version: x\nrules: [{id: a, action: review}, {id: a, action: allow}]",
    ],
)
def test_malformed_policies_are_refused_at_load(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_avatar_ai_compares_the_score_with_the_detector_threshold() -> None:
    env = Envelope(
        EVENT, AvatarResult(status="scored", score=0.93, face_found=True), (), ClusterSignal.none()
    )
    below = load_policy().decide(signals_of(env, ai_threshold=0.95))
    above = load_policy().decide(signals_of(env, ai_threshold=0.9))
    assert below.action == "allow" and below.queue is None
    assert above.action == "review" and above.queue == "ai-avatars"
    assert "AI-generated" in above.reasons[0]
