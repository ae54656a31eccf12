"""Review queue leases on real PostgreSQL: no double hand-out, expiry, escalation, audit."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from pipeline.review import queue as q
from pipeline.review.model import ESCALATED_QUEUE, Conflict, Forbidden, Reviewer
from pipeline.review.sample import seed_items
from pipeline.review.service import ReviewService
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.review_tables import review_audit
from pipeline.store.tables import review_items


def _service(url: str, lease_seconds: int = 300) -> ReviewService:
    settings = Settings(database={"url": url}, review={"lease_seconds": lease_seconds})
    return ReviewService(make_engine(url, pool_size=25), settings)


@pytest.fixture
def pg_url(fresh_database_url: str) -> str:
    upgrade(fresh_database_url)
    return fresh_database_url


def test_concurrent_claims_never_hand_out_one_item_twice(pg_url: str) -> None:
    service = _service(pg_url)
    seed_items(service.engine, 300, queue="accounts")
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(24)

    def reviewer(n: int) -> None:
        me = Reviewer(n, f"r{n}", "reviewer")
        try:
            barrier.wait()
            while True:
                item = service.claim(me, "accounts")
                if item is None:
                    return
                with lock:
                    claimed.append(item)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    dupes = [i for i, n in Counter(claimed).items() if n > 1]
    assert dupes == []
    assert len(claimed) == 300
    with service.engine.connect() as conn:
        owners = conn.execute(sa.select(sa.func.count()).select_from(review_items)
                              .where(review_items.c.status == "claimed")).scalar_one()
        claims = conn.execute(sa.select(sa.func.count()).select_from(review_audit)
                              .where(review_audit.c.action == "claim")).scalar_one()
    assert owners == 300 and claims == 300


def test_claim_order_is_priority_then_age(pg_url: str) -> None:
    service = _service(pg_url)
    seed_items(service.engine, 50)
    me = Reviewer(1, "alice", "reviewer")
    got = [service.claim(me, "accounts") for _ in range(5)]
    with service.engine.connect() as conn:
        rows = conn.execute(sa.select(review_items.c.id, review_items.c.priority,
                                      review_items.c.created_at)
                            .order_by(review_items.c.priority.desc(),
                                      review_items.c.created_at)).all()
    assert got == [r.id for r in rows[:5]]


def test_expired_lease_returns_item_to_queue(pg_url: str) -> None:
    service = _service(pg_url, lease_seconds=300)
    seed_items(service.engine, 1)
    alice, bob = Reviewer(1, "alice", "reviewer"), Reviewer(2, "bob", "reviewer")
    item = service.claim(alice, "accounts")
    assert item is not None
    assert service.claim(bob, "accounts") is None
    with service.engine.begin() as conn:
        later = datetime.now(UTC) + timedelta(seconds=301)
        row = q.claim_next(conn, "accounts", bob, 300, now=later)
    assert row is not None and row["id"] == item and row["lease_owner"] == "bob"
    with pytest.raises(Conflict):
        service.decide(alice, item, "clear")
    result = service.decide(bob, item, "clear")
    assert result.closed_items == (item,)


def test_release_and_escalation_to_leads(pg_url: str) -> None:
    service = _service(pg_url)
    seed_items(service.engine, 1)
    alice, lena = Reviewer(1, "alice", "reviewer"), Reviewer(2, "lena", "lead")
    item = service.claim(alice, "accounts")
    assert item is not None
    service.release(alice, item)
    assert service.claim(alice, "accounts") == item
    service.escalate(alice, item, "not sure: looks like a public figure")
    assert service.claim(alice, "accounts") is None
    with pytest.raises(Forbidden):
        service.claim(alice, ESCALATED_QUEUE)
    with service.engine.connect() as conn:
        stats = {s.queue: s for s in q.queue_stats(conn)}
    assert stats[ESCALATED_QUEUE].depth == 1 and stats["accounts"].depth == 0
    assert service.claim(lena, ESCALATED_QUEUE) == item
    with pytest.raises(Conflict):
        service.escalate(lena, item, None)
    service.decide(lena, item, "disable", "confirmed")
    with service.engine.connect() as conn:
        row = conn.execute(sa.select(review_items).where(review_items.c.id == item)
                           ).mappings().one()
        actions = conn.execute(sa.select(review_audit.c.action, review_audit.c.actor)
                               .where(review_audit.c.item_id == item)
                               .order_by(review_audit.c.id)).all()
    assert row["status"] == "decided" and row["open_key"] is None
    assert row["outcome"] == "disable" and row["decided_by"] == "lena"
    assert [tuple(a) for a in actions] == [
        ("claim", "alice"), ("release", "alice"), ("claim", "alice"), ("escalate", "alice"),
        ("claim", "lena"), ("decide", "lena")]


def test_audit_log_refuses_update_and_delete(pg_url: str) -> None:
    service = _service(pg_url)
    seed_items(service.engine, 1)
    assert service.claim(Reviewer(1, "alice", "reviewer"), "accounts") is not None
    engine = service.engine
    for statement in (review_audit.update().values(actor="mallory"), review_audit.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(statement)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE review_audit"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(review_audit.c.actor)).scalars().all() == ["alice"]


def test_sqlite_claims_with_the_same_interface(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'review.db'}"
    upgrade(url)
    service = _service(url)
    seed_items(service.engine, 3)
    me = Reviewer(1, "alice", "reviewer")
    got = {service.claim(me, "accounts") for _ in range(4)}
    assert got == {1, 2, 3, None}
    with pytest.raises(sa.exc.DBAPIError), service.engine.begin() as conn:
        conn.execute(review_audit.delete())
