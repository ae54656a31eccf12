"""The append-only audit log: who did what to which item, and when.

Rows are written in the same transaction as the action they describe, so an action without its
audit row cannot commit. The database refuses UPDATE and DELETE on the table (migration 0006).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from pipeline.review.model import Reviewer
from pipeline.store.review_tables import review_audit


def record(conn: Connection, actor: Reviewer | str, action: str, *, item_id: int | None = None,
           subject: str | None = None, detail: dict[str, Any] | None = None,
           now: datetime | None = None) -> int:
    """Append one audit row in the caller's transaction and return its id."""
    if isinstance(actor, Reviewer):
        name, role = actor.username, actor.role
    else:
        name, role = actor, "system"
    result = conn.execute(
        review_audit.insert().values(
            at=now or datetime.now(UTC), actor=name, actor_role=role, action=action,
            item_id=item_id, subject=subject, detail=detail or {},
        ).returning(review_audit.c.id)
    )
    return int(result.scalar_one())


def history(conn: Connection, *, actor: str | None = None, item_id: int | None = None,
            limit: int = 100, before_id: int | None = None) -> list[RowMapping]:
    """Newest first; filter by actor or item; page with ``before_id``."""
    stmt = sa.select(review_audit).order_by(review_audit.c.id.desc()).limit(limit)
    if actor is not None:
        stmt = stmt.where(review_audit.c.actor == actor)
    if item_id is not None:
        stmt = stmt.where(review_audit.c.item_id == item_id)
    if before_id is not None:
        stmt = stmt.where(review_audit.c.id < before_id)
    return list(conn.execute(stmt).mappings())
