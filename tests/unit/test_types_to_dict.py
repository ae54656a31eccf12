"""The stage values' ``to_dict`` give what ``dataclasses.asdict`` gave (the previous
implementation), key for key and in the same order, without its deep copy."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.types import AccountEvent, AvatarResult, ClusterSignal, Envelope, PhotoMatch


def _old_event(e: AccountEvent) -> dict[str, Any]:
    out = dataclasses.asdict(e)
    out["occurred_at"] = e.occurred_at.isoformat()
    out["links"] = list(e.links) if e.links is not None else None
    return out


def _old_cluster(c: ClusterSignal) -> dict[str, Any]:
    out = dataclasses.asdict(c)
    out["binding_features"] = list(c.binding_features)
    out["account_evidence"] = list(c.account_evidence)
    return out


EVENTS = [
    AccountEvent(
        "account.created.v1",
        "e1",
        datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
        "a1",
        "Jane 12",
        "jane12",
        "example.com",
        "10.0.0.1",
        "dev-1",
        "DE",
        "https://img.example/a.png",
        "bio https://x.example",
        ("https://x.example/p", "http://y.example"),
    ),
    AccountEvent("profile.updated.v1", "e2", datetime(2026, 1, 1, tzinfo=UTC), "a2"),
    AccountEvent("profile.updated.v1", "e3", datetime(2026, 1, 1, tzinfo=UTC), "a3", links=()),
]
AVATARS = [
    AvatarResult.absent(),
    AvatarResult.refused("too_large"),
    AvatarResult(
        "scored",
        sha256="ab" * 32,
        score=0.91,
        face_found=True,
        face_box=(10, 20, 200, 210),
        eyes=((0.38, 0.48), (0.62, 0.48)),
        width=512,
        height=512,
        model_version="m-1",
        hashes={"phash": "ff00ff00ff00ff00", "pdq": "00" * 32},
        latency_ms=12.5,
        eye_offset=0.012,
        cnn_score=0.88,
    ),
]
MATCHES = [
    PhotoMatch.from_bank("bank:1", "stock", 4, "mirror", "phash"),
    PhotoMatch.from_account("a9", 0, "exact", "sha256"),
]
CLUSTERS = [
    ClusterSignal.none(),
    ClusterSignal(
        "cl-1",
        0.83,
        14,
        ({"kind": "ip24", "label": "ip24:abcd", "count": 9, "weight": 0.7},),
        ({"account_id": "a2", "evidence": 1.4, "shared": ["ip24:abcd", "reused photo"]},),
    ),
]


@pytest.mark.parametrize("event", EVENTS)
def test_event_to_dict_as_before(event: AccountEvent) -> None:
    new, old = event.to_dict(), _old_event(event)
    assert new == old and list(new) == list(old)
    assert AccountEvent.from_dict(new) == event


@pytest.mark.parametrize("avatar", AVATARS)
def test_avatar_to_dict_as_before_and_not_aliased(avatar: AvatarResult) -> None:
    new, old = avatar.to_dict(), dataclasses.asdict(avatar)
    assert new == old and list(new) == list(old)
    assert json.dumps(new) == json.dumps(old)
    assert new["hashes"] is not avatar.hashes
    assert AvatarResult.from_dict(new) == avatar


@pytest.mark.parametrize("match", MATCHES)
def test_match_to_dict_as_before(match: PhotoMatch) -> None:
    new, old = match.to_dict(), dataclasses.asdict(match)
    assert new == old and list(new) == list(old)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_cluster_to_dict_as_before(cluster: ClusterSignal) -> None:
    new, old = cluster.to_dict(), _old_cluster(cluster)
    assert new == old and list(new) == list(old)
    assert json.dumps(new) == json.dumps(old)
    assert ClusterSignal.from_dict(new) == cluster


def test_envelope_round_trip() -> None:
    env = Envelope(EVENTS[0], AVATARS[2], tuple(MATCHES), CLUSTERS[1])
    assert Envelope.from_dict(json.loads(json.dumps(env.to_dict()))) == env
