"""Items opened by the real decide stage are claimable, readable and decidable by reviewers."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import sqlalchemy as sa

from pipeline.decide.stage import DecideStage
from pipeline.review.detail import load_detail
from pipeline.review.model import Reviewer
from pipeline.review.service import ReviewService
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.review_tables import review_labels
from pipeline.store.tables import decisions, review_items
from pipeline.types import AccountEvent, AvatarResult, ClusterSignal, Envelope, PhotoMatch


def _envelope(n: int, cluster: str | None, score: float, bank: bool = False) -> Envelope:
    event = AccountEvent(
        event_type="account.created.v1", event_id=f"ev-{n}", occurred_at=datetime.now(UTC),
        account_id=f"acct-{n}", display_name=f"Person {n}", username=f"person{n}",
        avatar_url=f"https://cdn.example/{n}.jpg")
    avatar = AvatarResult(status="scored", sha256=f"{n:064x}", score=score, face_found=True,
                          face_box=(10, 12, 60, 70), eyes=((0.38, 0.48), (0.62, 0.48)),
                          width=128, height=128, model_version="m1",
                          hashes={"phash": "8f0f0f0f0f0f0f0f"})
    matches = (PhotoMatch.from_bank("bank:x", "reported", 3, "plain", "phash"),) if bank else ()
    signal = (ClusterSignal(cluster, 0.86, 6, ({"kind": "ip_range", "label": "198.51.100.0/24",
                                                 "count": 6, "weight": 2.0},), ())
              if cluster else ClusterSignal.none())
    return Envelope(event=event, avatar=avatar, matches=matches, cluster=signal)


def test_decide_stage_items_go_through_review(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    settings = Settings(database={"url": fresh_database_url})
    engine = make_engine(fresh_database_url)
    stage = DecideStage(engine, settings)
    stage.process([_envelope(1, None, 0.93), _envelope(2, None, 0.2, bank=True),
                   *[_envelope(10 + i, "c-1", 0.7) for i in range(3)]])
    with engine.connect() as conn:
        items = conn.execute(sa.select(review_items.c.queue, review_items.c.subject_type)
                             .order_by(review_items.c.id)).all()
    assert ("clusters", "cluster") in items and ("stolen-photos", "account") in items

    service = ReviewService(engine, settings)
    alice = Reviewer(1, "alice", "reviewer")
    stolen = service.claim(alice, "stolen-photos")
    assert stolen is not None
    with engine.connect() as conn:
        detail = load_detail(conn, stolen, alice)
    assert detail["mine"] and detail["avatar"]["face_box"] == (10, 12, 60, 70)
    assert detail["matches"][0]["distance"] == 3 and detail["reasons"]
    assert detail["policy_version"] == stage.policy.version
    result = service.decide(alice, stolen, "disable", "reported photo", "real", "stolen")
    assert result.labels == 3

    cluster_item = service.claim(alice, "clusters")
    assert cluster_item is not None
    with engine.connect() as conn:
        detail = load_detail(conn, cluster_item, alice)
    assert {m["account_id"] for m in detail["cluster"]["members"]} == {"acct-10", "acct-11",
                                                                      "acct-12"}
    assert detail["cluster"]["binding_features"][0]["label"] == "198.51.100.0/24"
    bulk = service.decide(alice, cluster_item, "disable", "network")
    assert len(bulk.decision_ids) == 3

    with engine.connect() as conn:
        rows = conn.execute(sa.select(decisions.c.account_id, decisions.c.event_id)
                            .where(decisions.c.source == "reviewer")
                            .order_by(decisions.c.account_id)).all()
        kinds = conn.execute(sa.select(review_labels.c.kind).where(
            review_labels.c.account_id == "acct-2")).scalars().all()
    assert [tuple(r) for r in rows] == [("acct-10", "ev-10"), ("acct-11", "ev-11"),
                                        ("acct-12", "ev-12"), ("acct-2", "ev-2")]
    assert sorted(kinds) == ["account", "avatar", "photo"]

    again = _envelope(2, None, 0.2, bank=True)
    stage.process([again, dataclasses.replace(
        again, event=dataclasses.replace(again.event, event_id="ev-2-later"))])
    with engine.connect() as conn:
        reopened = conn.execute(sa.select(sa.func.count()).select_from(review_items).where(
            review_items.c.open_key == "account:acct-2")).scalar_one()
    assert reopened == 1
