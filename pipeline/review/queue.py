"""Review queues in SQL: claim with a lease, release, escalate, close, and queue statistics.

Claiming is one statement: ``UPDATE review_items SET <lease> WHERE id = (SELECT id ... ORDER BY
priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING ...``. On PostgreSQL
concurrent claimers skip each other's locked rows instead of waiting, and a row another claimer
just took no longer matches the re-checked WHERE, so no item is handed out twice. An item whose
lease ran out (a reviewer who walked away) is claimable again. SQLite (the embedded demo) has no
row locks; the single UPDATE runs under its database write lock, which gives the same guarantee.

Every function takes the caller's ``Connection`` so that the queue change, the audit row and the
feedback rows commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from pipeline.review import audit
from pipeline.review.model import ESCALATED_QUEUE, Conflict, NotFound, Reviewer
from pipeline.store.tables import review_items

ri = review_items
OPEN_STATUSES = ("pending", "claimed", "escalated")
KNOWN_QUEUES = ("clusters", "stolen-photos", "ai-avatars", "accounts")
"""The queues pipeline/decide/policy.yaml routes to; listed on the page even when empty."""


@dataclass(frozen=True)
class QueueStats:
    """Work waiting in one queue: ``depth`` claimable items, ``in_review`` under a live lease."""

    queue: str
    depth: int
    in_review: int
    oldest_created_at: datetime | None

    def oldest_age_s(self, now: datetime) -> float:
        if self.oldest_created_at is None:
            return 0.0
        return max(0.0, (now - aware(self.oldest_created_at)).total_seconds())


def aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _claimable(queue: str, now: datetime) -> sa.ColumnElement[bool]:
    expired = sa.and_(ri.c.status == "claimed", ri.c.lease_expires_at < now)
    if queue == ESCALATED_QUEUE:
        return sa.and_(ri.c.open_key.isnot(None), ri.c.escalation_level >= 1,
                       sa.or_(ri.c.status == "escalated", expired))
    return sa.and_(ri.c.open_key.isnot(None), ri.c.queue == queue, ri.c.escalation_level == 0,
                   sa.or_(ri.c.status == "pending", expired))


def claim_next(conn: Connection, queue: str, reviewer: Reviewer, lease_seconds: int,
               now: datetime | None = None) -> RowMapping | None:
    """Lease the most urgent claimable item of ``queue`` to ``reviewer``; None when empty.

    Order: priority descending, then oldest first. Never blocks on rows other claimers hold.
    The lease lasts ``lease_seconds``; the caller's transaction must commit for it to count.
    On PostgreSQL the transaction commits without waiting for the WAL flush: a crash can forget
    the last few claims (and their audit rows) together, which only returns them to the queue.
    """
    now = now or datetime.now(UTC)
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
    order = [ri.c.priority.desc(), ri.c.created_at]
    if queue == ESCALATED_QUEUE:
        order = [ri.c.escalation_level.desc(), *order]
    target = (
        sa.select(ri.c.id).where(_claimable(queue, now)).order_by(*order).limit(1)
        .with_for_update(skip_locked=True).scalar_subquery()
    )
    stmt = (
        ri.update().where(ri.c.id == target)
        .values(status="claimed", lease_owner=reviewer.username,
                lease_expires_at=now + timedelta(seconds=lease_seconds), claimed_at=now,
                updated_at=now)
        .returning(*ri.c)
    )
    return conn.execute(stmt).mappings().first()


_PG_CLAIM_AUDITED = sa.text("""
SET LOCAL synchronous_commit = off;
WITH target AS (
    SELECT id FROM review_items
    WHERE open_key IS NOT NULL AND queue = :queue AND escalation_level = 0
      AND (status = 'pending' OR (status = 'claimed' AND lease_expires_at < :now))
    ORDER BY priority DESC, created_at
    LIMIT 1 FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE review_items r
    SET status = 'claimed', lease_owner = :owner, lease_expires_at = :until, claimed_at = :now,
        updated_at = :now
    FROM target WHERE r.id = target.id
    RETURNING r.id, r.subject_type, r.subject_id
)
INSERT INTO review_audit (at, actor, actor_role, action, item_id, subject, detail)
SELECT :now, :owner, :role, 'claim', id, subject_type || ':' || subject_id,
       jsonb_build_object('queue', CAST(:queue AS text),
                          'lease_expires_at', CAST(:until_iso AS text))
FROM claimed
RETURNING item_id
""")


def claim_next_audited(conn: Connection, queue: str, reviewer: Reviewer, lease_seconds: int,
                       now: datetime | None = None) -> int | None:
    """``claim_next`` plus its audit row; the id of the claimed item or None.

    On PostgreSQL (ordinary queues) the lease and the audit row are one statement, one round
    trip; elsewhere two statements in the caller's transaction.
    """
    now = now or datetime.now(UTC)
    until = now + timedelta(seconds=lease_seconds)
    if conn.dialect.name == "postgresql" and queue != ESCALATED_QUEUE:
        got = conn.execute(_PG_CLAIM_AUDITED, {
            "queue": queue, "now": now, "owner": reviewer.username, "until": until,
            "role": reviewer.role, "until_iso": until.isoformat()}).scalar()
        return int(got) if got is not None else None
    row = claim_next(conn, queue, reviewer, lease_seconds, now)
    if row is None:
        return None
    audit.record(conn, reviewer, "claim", item_id=row["id"],
                 subject=f"{row['subject_type']}:{row['subject_id']}", now=now,
                 detail={"queue": queue, "lease_expires_at": until.isoformat()})
    return int(row["id"])


def lock_item(conn: Connection, item_id: int) -> RowMapping:
    """Read one item FOR UPDATE (the caller then changes it); raises NotFound."""
    row = conn.execute(
        sa.select(ri).where(ri.c.id == item_id).with_for_update()
    ).mappings().first()
    if row is None:
        raise NotFound(f"review item {item_id} not found")
    return row


def require_lease(item: RowMapping, reviewer: Reviewer) -> None:
    """Only the holder of an item's lease may act on it (even after expiry, until re-claimed)."""
    if item["open_key"] is None:
        raise Conflict(f"review item {item['id']} is already {item['status']}")
    if item["status"] != "claimed" or item["lease_owner"] != reviewer.username:
        raise Conflict(f"review item {item['id']} is not claimed by you")


def release(conn: Connection, item: RowMapping, reviewer: Reviewer,
            now: datetime | None = None) -> None:
    """Give a claimed item back to its queue (escalated items back to the leads)."""
    require_lease(item, reviewer)
    now = now or datetime.now(UTC)
    status = "escalated" if item["escalation_level"] >= 1 else "pending"
    conn.execute(ri.update().where(ri.c.id == item["id"]).values(
        status=status, lease_owner=None, lease_expires_at=None, updated_at=now))


def escalate(conn: Connection, item: RowMapping, reviewer: Reviewer,
             now: datetime | None = None) -> None:
    """Hand a claimed item to the leads' queue (escalation level 1), lease cleared."""
    require_lease(item, reviewer)
    now = now or datetime.now(UTC)
    conn.execute(ri.update().where(ri.c.id == item["id"]).values(
        status="escalated", escalation_level=item["escalation_level"] + 1, lease_owner=None,
        lease_expires_at=None, updated_at=now))


def close(conn: Connection, item_ids: Sequence[int], outcome: str, reviewer: Reviewer,
          decision_id: str | None, now: datetime | None = None) -> int:
    """Mark items decided (open_key cleared so a new item may open later); returns rows closed."""
    if not item_ids:
        return 0
    now = now or datetime.now(UTC)
    values: dict[str, Any] = {
        "status": "decided", "outcome": outcome, "open_key": None, "decided_at": now,
        "decided_by": reviewer.username, "lease_owner": None, "lease_expires_at": None,
        "updated_at": now,
    }
    if decision_id is not None:
        values["decision_id"] = decision_id
    result = conn.execute(ri.update().where(ri.c.id.in_(list(item_ids)))
                          .where(ri.c.open_key.isnot(None)).values(**values))
    return int(result.rowcount or 0)


def open_items_for_accounts(conn: Connection, account_ids: Sequence[str]) -> list[RowMapping]:
    """Open account items of these accounts, locked, in id order (for bulk decisions)."""
    if not account_ids:
        return []
    keys = [f"account:{a}" for a in account_ids]
    return list(conn.execute(
        sa.select(ri).where(ri.c.open_key.in_(keys)).order_by(ri.c.id).with_for_update()
    ).mappings())


def queue_stats(conn: Connection, now: datetime | None = None,
                include_escalated: bool = True, known: Sequence[str] = KNOWN_QUEUES
                ) -> list[QueueStats]:
    """Depth, live leases and oldest claimable item per queue (plus the escalation queue);
    ``known`` queues are listed even when empty."""
    now = now or datetime.now(UTC)
    live = sa.and_(ri.c.status == "claimed", ri.c.lease_expires_at >= now)
    waiting = sa.not_(live)
    escalated = ri.c.escalation_level >= 1
    name = sa.case((escalated, sa.literal(ESCALATED_QUEUE)), else_=ri.c.queue).label("name")
    rows = conn.execute(
        sa.select(
            name,
            sa.func.sum(sa.case((waiting, 1), else_=0)).label("depth"),
            sa.func.sum(sa.case((live, 1), else_=0)).label("in_review"),
            sa.func.min(sa.case((waiting, ri.c.created_at), else_=None)).label("oldest"),
        ).where(ri.c.open_key.isnot(None)).group_by(name)
    ).all()
    stats = {r.name: QueueStats(r.name, int(r.depth or 0), int(r.in_review or 0),
                                aware(r.oldest) if r.oldest is not None else None) for r in rows}
    for name in (*known, *((ESCALATED_QUEUE,) if include_escalated else ())):
        stats.setdefault(name, QueueStats(name, 0, 0, None))
    return sorted(stats.values(), key=lambda s: (s.queue == ESCALATED_QUEUE, s.queue))


def my_claims(conn: Connection, reviewer: Reviewer, now: datetime | None = None
              ) -> list[RowMapping]:
    """Items currently leased to ``reviewer`` (so a reload finds the work again)."""
    now = now or datetime.now(UTC)
    return list(conn.execute(
        sa.select(ri.c.id, ri.c.queue, ri.c.subject_type, ri.c.subject_id, ri.c.lease_expires_at)
        .where(ri.c.status == "claimed", ri.c.lease_owner == reviewer.username,
               ri.c.lease_expires_at >= now, ri.c.open_key.isnot(None))
        .order_by(ri.c.claimed_at)
    ).mappings())


def get_item(conn: Connection, item_id: int) -> RowMapping:
    row = conn.execute(sa.select(ri).where(ri.c.id == item_id)).mappings().first()
    if row is None:
        raise NotFound(f"review item {item_id} not found")
    return row
