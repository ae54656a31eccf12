"""SQL of the signals stage: one function per round trip, each taking the caller's connection.

No logic beyond shaping rows; the stage decides what to write. Every statement works on
PostgreSQL and SQLite (``FOR UPDATE`` is dropped on SQLite, which has one writer anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.signals.features import Feature
from pipeline.store.signal_tables import (
    signal_account_features,
    signal_accounts,
    signal_clusters,
    signal_counts,
    signal_results,
)
from pipeline.store.tables import processed_events

T = TypeVar("T")
CHUNK = 2000
"""Rows (or key tuples) per statement; keeps SQLite under its bound-parameter limit."""

ValueKey = tuple[str, str]


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def claim_many(conn: Connection, event_ids: Sequence[str], stage: str) -> set[str]:
    """Mark each (event_id, stage) processed; returns the ids marked now (not before)."""
    claimed: set[str] = set()
    unique = sorted(set(event_ids))
    now = datetime.now(UTC)
    for part in _chunks(unique, CHUNK // 2):
        stmt = (
            _insert(conn, processed_events)
            .values([{"event_id": e, "stage": stage, "processed_at": now} for e in part])
            .on_conflict_do_nothing(index_elements=["event_id", "stage"])
            .returning(processed_events.c.event_id)
        )
        claimed.update(row[0] for row in conn.execute(stmt))
    return claimed


def load_results(conn: Connection, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Stored ClusterSignal dicts of already processed events."""
    out: dict[str, dict[str, Any]] = {}
    for part in _chunks(sorted(set(event_ids))):
        rows = conn.execute(
            sa.select(signal_results.c.event_id, signal_results.c.cluster).where(
                signal_results.c.event_id.in_(part)
            )
        )
        out.update({r.event_id: r.cluster for r in rows})
    return out


def save_results(conn: Connection, rows: list[dict[str, Any]]) -> None:
    for part in _chunks(rows, 500):
        conn.execute(
            _insert(conn, signal_results)
            .values(list(part))
            .on_conflict_do_nothing(index_elements=["event_id"])
        )


def load_account_features(conn: Connection, account_ids: Sequence[str]) -> dict[str, set[Feature]]:
    """Stored features of each account."""
    out: dict[str, set[Feature]] = {}
    t = signal_account_features
    for part in _chunks(sorted(set(account_ids))):
        rows = conn.execute(
            sa.select(t.c.account_id, t.c.kind, t.c.value, t.c.label).where(
                t.c.account_id.in_(part)
            )
        )
        for r in rows:
            out.setdefault(r.account_id, set()).add(Feature(r.kind, r.value, r.label))
    return out


def insert_account_features(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Store new (account, feature) rows; rows already stored are left as they are."""
    rows = sorted(rows, key=lambda r: (r["account_id"], r["kind"], r["value"]))
    for part in _chunks(rows, 1000):
        conn.execute(
            _insert(conn, signal_account_features)
            .values(list(part))
            .on_conflict_do_nothing(index_elements=["account_id", "kind", "value"])
        )


def add_counts(conn: Connection, increments: dict[tuple[str, str, int, int], int]) -> None:
    """Add to the (kind, value, width, bucket) counters; one multi-row upsert per chunk.

    Rows go in key order so concurrent workers lock shared counters in the same order.
    """
    rows = [
        {"kind": k, "value": v, "width_s": w, "bucket_s": b, "count": n}
        for (k, v, w, b), n in sorted(increments.items())
    ]
    for part in _chunks(rows, 1000):
        stmt = _insert(conn, signal_counts).values(list(part))
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["kind", "value", "width_s", "bucket_s"],
                set_={"count": signal_counts.c.count + stmt.excluded.count},
            )
        )


def read_counts(
    conn: Connection, keys: Iterable[ValueKey], width_s: int, first_s: int, last_s: int
) -> dict[ValueKey, int]:
    """Sum of each value's counters over buckets ``first_s..last_s`` of width ``width_s``."""
    t = signal_counts
    out: dict[ValueKey, int] = {}
    for part in _chunks(sorted(set(keys))):
        rows = conn.execute(
            sa.select(t.c.kind, t.c.value, sa.func.sum(t.c.count).label("n"))
            .where(
                t.c.width_s == width_s,
                t.c.bucket_s.between(first_s, last_s),
                sa.tuple_(t.c.kind, t.c.value).in_(list(part)),
            )
            .group_by(t.c.kind, t.c.value)
        )
        out.update({(r.kind, r.value): int(r.n) for r in rows})
    return out


def partners(
    conn: Connection, keys: Iterable[ValueKey], since_s: int
) -> list[tuple[str, str, str, int]]:
    """(kind, value, account_id, seen_s) of accounts showing one of ``keys`` since ``since_s``."""
    t = signal_account_features
    out: list[tuple[str, str, str, int]] = []
    for part in _chunks(sorted(set(keys))):
        rows = conn.execute(
            sa.select(t.c.kind, t.c.value, t.c.account_id, t.c.seen_s).where(
                sa.tuple_(t.c.kind, t.c.value).in_(list(part)), t.c.seen_s >= since_s
            )
        )
        out.extend((r.kind, r.value, r.account_id, int(r.seen_s)) for r in rows)
    return out


def read_accounts(conn: Connection, account_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    t = signal_accounts
    out: dict[str, dict[str, Any]] = {}
    for part in _chunks(sorted(set(account_ids))):
        rows = conn.execute(sa.select(t).where(t.c.account_id.in_(part)))
        out.update({r.account_id: dict(r._mapping) for r in rows})
    return out


def upsert_accounts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert accounts or OR their flags into the stored ones (cluster_id is not touched)."""
    rows = sorted(rows, key=lambda r: r["account_id"])
    for part in _chunks(rows, 1000):
        stmt = _insert(conn, signal_accounts).values(list(part))
        t = signal_accounts
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["account_id"],
                set_={
                    "ai_face": sa.or_(t.c.ai_face, stmt.excluded.ai_face),
                    "reused_photo": sa.or_(t.c.reused_photo, stmt.excluded.reused_photo),
                    "burst": sa.or_(t.c.burst, stmt.excluded.burst),
                },
            )
        )


def lock_clusters(conn: Connection, cluster_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Lock the clusters (``SELECT ... FOR UPDATE``, in id order) and return those that exist."""
    ids = sorted(set(cluster_ids))
    if not ids:
        return {}
    t = signal_clusters
    rows = conn.execute(
        sa.select(t).where(t.c.cluster_id.in_(ids)).order_by(t.c.cluster_id).with_for_update()
    )
    return {r.cluster_id: dict(r._mapping) for r in rows}


def cluster_of(conn: Connection, account_ids: Iterable[str]) -> dict[str, str | None]:
    t = signal_accounts
    out: dict[str, str | None] = {}
    for part in _chunks(sorted(set(account_ids))):
        rows = conn.execute(
            sa.select(t.c.account_id, t.c.cluster_id).where(t.c.account_id.in_(part))
        )
        out.update({r.account_id: r.cluster_id for r in rows})
    return out


def repoint_clusters(conn: Connection, survivor: str, merged: Sequence[str]) -> None:
    """Move every member of the ``merged`` clusters into ``survivor`` and delete them."""
    if not merged:
        return
    conn.execute(
        signal_accounts.update()
        .where(signal_accounts.c.cluster_id.in_(list(merged)))
        .values(cluster_id=survivor)
    )
    conn.execute(signal_clusters.delete().where(signal_clusters.c.cluster_id.in_(list(merged))))


def attach_unclustered(conn: Connection, cluster_id: str, account_ids: Sequence[str]) -> int:
    """Put accounts that are in no cluster into ``cluster_id``; returns how many moved."""
    if not account_ids:
        return 0
    result = conn.execute(
        signal_accounts.update()
        .where(
            signal_accounts.c.account_id.in_(list(account_ids)),
            signal_accounts.c.cluster_id.is_(None),
        )
        .values(cluster_id=cluster_id)
    )
    return int(result.rowcount or 0)


def cluster_member_stats(conn: Connection, cluster_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    t = signal_accounts
    one = sa.literal(1)
    zero = sa.literal(0)
    rows = conn.execute(
        sa.select(
            t.c.cluster_id,
            sa.func.count().label("size"),
            sa.func.sum(sa.case((t.c.ai_face, one), else_=zero)).label("ai"),
            sa.func.sum(sa.case((t.c.reused_photo, one), else_=zero)).label("reused"),
            sa.func.sum(sa.case((t.c.burst, one), else_=zero)).label("burst"),
            sa.func.min(t.c.created_s).label("first_s"),
        )
        .where(t.c.cluster_id.in_(list(cluster_ids)))
        .group_by(t.c.cluster_id)
    )
    return {
        r.cluster_id: {
            "size": int(r.size),
            "ai": int(r.ai or 0),
            "reused": int(r.reused or 0),
            "burst": int(r.burst or 0),
            "first_s": int(r.first_s),
        }
        for r in rows
    }


def cluster_shared_features(
    conn: Connection, cluster_ids: Sequence[str]
) -> dict[str, list[tuple[str, str, str, int]]]:
    """Per cluster: (kind, value, label, members) of every value shared by at least two members."""
    f = signal_account_features
    a = signal_accounts
    n = sa.func.count().label("n")
    rows = conn.execute(
        sa.select(a.c.cluster_id, f.c.kind, f.c.value, sa.func.min(f.c.label).label("label"), n)
        .select_from(f.join(a, a.c.account_id == f.c.account_id))
        .where(a.c.cluster_id.in_(list(cluster_ids)))
        .group_by(a.c.cluster_id, f.c.kind, f.c.value)
        .having(sa.func.count() >= 2)
    )
    out: dict[str, list[tuple[str, str, str, int]]] = {}
    for r in rows:
        out.setdefault(r.cluster_id, []).append((r.kind, r.value, r.label, int(r.n)))
    return out


def save_clusters(conn: Connection, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        stmt = _insert(conn, signal_clusters).values(**row)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["cluster_id"],
                set_={
                    k: stmt.excluded[k] for k in ("size", "score", "parts", "binding", "updated_s")
                },
            )
        )


def read_clusters(conn: Connection, cluster_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    t = signal_clusters
    out: dict[str, dict[str, Any]] = {}
    for part in _chunks(sorted(set(cluster_ids))):
        rows = conn.execute(sa.select(t).where(t.c.cluster_id.in_(part)))
        out.update({r.cluster_id: dict(r._mapping) for r in rows})
    return out


def delete_older_than(conn: Connection, cutoff_s: int) -> dict[str, int]:
    """Retention: delete counters, account features and results older than ``cutoff_s``."""
    deleted = {}
    for name, stmt in (
        ("counts", signal_counts.delete().where(signal_counts.c.bucket_s < cutoff_s)),
        (
            "features",
            signal_account_features.delete().where(signal_account_features.c.seen_s < cutoff_s),
        ),
        ("results", signal_results.delete().where(signal_results.c.created_s < cutoff_s)),
    ):
        deleted[name] = int(conn.execute(stmt).rowcount or 0)
    return deleted
