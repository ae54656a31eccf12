"""Pure review rules: roles, labels, reviewer decisions on the wire, page helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from pipeline.review.auth import csrf_matches, hash_password, verify_password
from pipeline.review.model import (
    ESCALATED_QUEUE,
    Reviewer,
    can_claim,
    can_escalate,
    labels_for,
    reviewer_decision,
    reviewer_decision_id,
    suggested_labels,
)
from pipeline.review.views import age_words, avatar_view, cluster_graph, local_time
from pipeline.store.images import ImageStore

REPO = Path(__file__).resolve().parents[2]
ALICE = Reviewer(1, "alice", "reviewer")
LEAD = Reviewer(2, "lena", "lead", "Europe/Oslo")


def test_only_leads_and_admins_claim_escalations() -> None:
    assert can_claim(ALICE, "accounts")
    assert not can_claim(ALICE, ESCALATED_QUEUE)
    assert can_claim(LEAD, ESCALATED_QUEUE)
    assert can_claim(Reviewer(3, "root", "admin"), ESCALATED_QUEUE)
    assert can_escalate(0) and not can_escalate(1)


def test_labels_follow_outcome_and_statements() -> None:
    assert labels_for("disable", "ai", "stolen") == [
        ("account", "fake"), ("avatar", "ai"), ("photo", "stolen")]
    assert labels_for("clear", "unsure", None) == [("account", "genuine")]
    with pytest.raises(ValueError):
        labels_for("escalate", None, None)
    with pytest.raises(ValueError):
        labels_for("disable", "probably", None)


def test_suggested_labels_from_evidence() -> None:
    assert suggested_labels({"avatar": {"score": 0.91}, "matches": [{"x": 1}]}) == (
        "ai", "stolen")
    assert suggested_labels({"avatar": {"score": 0.1}, "matches": []}) == ("real", "original")
    assert suggested_labels({}) == ("unsure", "original")


def test_reviewer_decision_matches_the_wire_schema() -> None:
    schema = json.loads((REPO / "schemas" / "enforcement.decision.v1.json").read_text())
    did = reviewer_decision_id("17", 42)
    assert did == "rev:17:42"
    assert reviewer_decision_id("17", 42, "acct-1") == "rev:17:42:acct-1"
    decision = reviewer_decision(
        decision_id=did, event_id="ev-1", account_id="acct-1",
        decided_at=datetime(2026, 11, 29, tzinfo=UTC), outcome="disable", reviewer=ALICE,
        note="same face as bank entry", policy_version="p-3", pipeline_score=0.7, priority=250)
    doc = decision.to_dict()
    jsonschema.validate(doc, schema)
    assert doc["source"] == "reviewer" and doc["action"] == "disable" and doc["priority"] == 100
    assert doc["evidence"]["reviewer"] == "alice"
    cleared = reviewer_decision(
        decision_id="rev:1:2", event_id="ev-2", account_id="a", decided_at=datetime.now(UTC),
        outcome="clear", reviewer=ALICE, note="", policy_version="p", pipeline_score=None,
        priority=10)
    assert cleared.action == "allow" and cleared.score == 0.0


def test_passwords_hash_and_verify() -> None:
    h = hash_password("correct horse battery")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse battery")
    assert not verify_password(h, "correct horse batterx")
    assert not verify_password("not a hash", "x")


def test_csrf_comparison_refuses_missing_tokens() -> None:
    assert csrf_matches("abc", "abc")
    assert not csrf_matches("abc", "abd")
    assert not csrf_matches(None, None)
    assert not csrf_matches("", "")


def test_time_helpers() -> None:
    t = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert local_time(t, "Europe/Oslo") == "2026-07-01 14:00:00 CEST"
    assert local_time(t.replace(tzinfo=None), "Nowhere/Atlantis").endswith("12:00:00 UTC")
    assert local_time(None, "UTC") == ""
    assert [age_words(s) for s in (5, 125, 3 * 3600 + 300, 2 * 86400 + 7200)] == [
        "5s", "2m", "3h 5m", "2d 2h"]
    assert age_words(timedelta(seconds=-3).total_seconds()) == "0s"


def test_avatar_view_checks_the_face_box() -> None:
    view = avatar_view({"sha256": "ab", "score": 0.8, "face_box": [10, 20, 30, 40],
                        "eyes": [[0.4, 0.5], [0.6, 0.5]], "width": 128, "height": 128,
                        "status": "scored"})
    assert view.face_box == (10, 20, 30, 40) and len(view.eyes) == 2
    assert avatar_view({"face_box": [0, 0, 0, 5]}).face_box is None
    assert avatar_view(None).status == "absent"


def test_cluster_graph_keeps_shared_features_only() -> None:
    members = ["a", "b", "c"]
    rows = [("a", "ip", "10.0.0.0/24"), ("b", "ip", "10.0.0.0/24"), ("c", "link", "x.example"),
            ("a", "device", "d1")]
    g = cluster_graph(members, rows, subject="b", size=200)
    features = [n for n in g.nodes if n.kind == "feature"]
    assert [f.label for f in features] == ["ip: 10.0.0.0/24"]
    assert len(g.edges) == 2
    assert g.nodes[0].key == "b" and g.nodes[0].highlight
    assert all(0 <= n.x <= 200 and 0 <= n.y <= 200 for n in g.nodes)
    big = cluster_graph([f"m{i}" for i in range(30)], [], max_accounts=24)
    assert big.hidden_accounts == 6


def test_image_store_is_content_addressed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    sha = store.put(b"\xff\xd8\xffpicture")
    assert store.put(b"\xff\xd8\xffpicture") == sha
    assert store.get(sha) == b"\xff\xd8\xffpicture" and store.has(sha)
    assert store.get("../../etc/passwd") is None
    assert store.get("0" * 64) is None
    with pytest.raises(ValueError):
        store.path_for("ABC")


def test_login_throttle_blocks_after_repeated_failures() -> None:
    from pipeline.review.auth import LoginThrottle

    throttle = LoginThrottle(limit=3, window_s=60)
    for t in range(3):
        assert not throttle.blocked("alice", now=float(t))
        throttle.record("alice", ok=False, now=float(t))
    assert throttle.blocked("alice", now=10.0)
    assert not throttle.blocked("bob", now=10.0)
    assert not throttle.blocked("alice", now=100.0)
    throttle.record("alice", ok=False, now=100.0)
    throttle.record("alice", ok=True, now=101.0)
    assert not throttle.blocked("alice", now=102.0)
