"""SQL of the signals stage: one function per round trip, each taking the caller's connection.

No logic beyond shaping rows; the stage decides what to write. On PostgreSQL writes of many rows
are one ``INSERT ... SELECT * FROM ROWS FROM (unnest(<one array per column>), ...)``, reads by
many (kind, value) keys are ``unnest`` of two arrays with a ``LATERAL`` index lookup per key (a
plan the statistics cannot turn into a scan), and reads by many ids are one ``= ANY(<array>)``;
SQLite gets ``executemany`` and chunked ``IN`` lists. Every function works on both (``FOR
UPDATE`` is dropped on SQLite, which has one writer anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from pipeline.signals.features import Feature
from pipeline.store import db
from pipeline.store.signal_tables import (
    signal_account_features,
    signal_accounts,
    signal_cluster_features,
    signal_clusters,
    signal_counts,
    signal_results,
    signal_suspect_counts,
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
    from sqlalchemy.dialects import postgresql, sqlite

    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _pg_bulk(
    conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], tail: str
) -> sa.CursorResult[Any]:
    """One ``INSERT ... SELECT * FROM ROWS FROM (unnest(array per column), ...) <tail>`` for all
    ``rows`` (:func:`pipeline.store.db.pg_bulk_insert`)."""
    return db.pg_bulk_insert(conn, table, rows, tail)


def _texts(values: Iterable[Any]) -> str:
    return db.pg_array(values, "text")


def _among(
    conn: Connection, column: sa.ColumnElement[Any], ids: Iterable[str]
) -> Iterator[sa.ColumnElement[bool]]:
    """``column IN ids`` as clauses to run one after the other: on PostgreSQL one
    ``= ANY(CAST(:p AS TEXT[]))`` with the ids as one array literal (one parameter, one cached
    statement, however many ids: an ``IN`` list of a thousand ids is a thousand parameters to
    render, quote and parse); elsewhere ``IN`` chunks of :data:`CHUNK` (SQLite's
    bound-parameter limit)."""
    unique = sorted(set(ids))
    if not unique:
        return
    if _pg(conn):
        yield column == sa.any_(sa.cast(sa.literal(_texts(unique)), ARRAY(sa.Text)))
        return
    for part in _chunks(unique):
        yield column.in_(part)


def claim_many(conn: Connection, event_ids: Sequence[str], stage: str) -> set[str]:
    """Mark each (event_id, stage) processed; returns the ids marked now (not before).
    PostgreSQL takes one unnest INSERT; elsewhere ``pipeline.store.db.claim_many``."""
    unique = sorted(set(event_ids))
    if not unique:
        return set()
    now = datetime.now(UTC)
    if _pg(conn):
        result = _pg_bulk(
            conn,
            processed_events,
            [{"event_id": e, "stage": stage, "processed_at": now} for e in unique],
            "ON CONFLICT (event_id, stage) DO NOTHING RETURNING event_id",
        )
        return {r[0] for r in result}
    return db.claim_many(conn, unique, stage)


def load_results(conn: Connection, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Stored ClusterSignal dicts of already processed events."""
    out: dict[str, dict[str, Any]] = {}
    for among in _among(conn, signal_results.c.event_id, event_ids):
        rows = conn.execute(
            sa.select(signal_results.c.event_id, signal_results.c.cluster).where(among)
        )
        out.update({r.event_id: r.cluster for r in rows})
    return out


def save_results(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows and _pg(conn):
        _pg_bulk(conn, signal_results, rows, "ON CONFLICT (event_id) DO NOTHING")
    elif rows:
        conn.execute(
            _insert(conn, signal_results).on_conflict_do_nothing(index_elements=["event_id"]),
            rows,
        )


def load_feature_times(
    conn: Connection, account_ids: Iterable[str]
) -> dict[str, dict[Feature, int]]:
    """Stored features of each account with their first sight (``seen_s``)."""
    out: dict[str, dict[Feature, int]] = {}
    t = signal_account_features
    for among in _among(conn, t.c.account_id, account_ids):
        rows = conn.execute(
            sa.select(t.c.account_id, t.c.kind, t.c.value, t.c.label, t.c.seen_s).where(among)
        )
        for account_id, kind, value, label, seen_s in rows.tuples():
            out.setdefault(account_id, {})[Feature(kind, value, label)] = int(seen_s)
    return out


def suspect_accounts(conn: Connection, account_ids: Iterable[str]) -> set[str]:
    """Those of ``account_ids`` stored with an AI face or a reused photo."""
    t = signal_accounts
    out: set[str] = set()
    for among in _among(conn, t.c.account_id, account_ids):
        rows = conn.execute(
            sa.select(t.c.account_id).where(among, sa.or_(t.c.ai_face, t.c.reused_photo))
        )
        out.update(r[0] for r in rows.tuples())
    return out


_FEATURE_COLUMNS = ("account_id", "kind", "value", "label", "seen_s")
_UNIQUE_VIOLATION = "23505"


def insert_account_features(conn: Connection, rows: list[tuple[str, str, str, str, int]]) -> None:
    """Store new (account_id, kind, value, label, seen_s) rows; rows already stored are left as
    they are.

    On PostgreSQL the rows go first as a plain insert in a savepoint: the caller passes the
    features it did not find stored, so a conflict only comes from a concurrent batch of the same
    account, and ``ON CONFLICT DO NOTHING`` (a speculative insertion: the key is probed before
    every row is inserted) costs the server ~25 % more for every row of every batch. On a unique
    violation the savepoint is rolled back and the rows go again with ``ON CONFLICT DO
    NOTHING``."""
    rows = sorted(rows, key=itemgetter(0, 1, 2))
    if rows and _pg(conn):
        columns: dict[str, Sequence[Any]] = dict(
            zip(_FEATURE_COLUMNS, zip(*rows, strict=True), strict=True)
        )
        try:
            with conn.begin_nested():
                db.pg_bulk_insert_columns(conn, signal_account_features, columns)
        except sa.exc.IntegrityError as exc:
            if getattr(exc.orig, "pgcode", None) != _UNIQUE_VIOLATION:
                raise
            db.pg_bulk_insert_columns(
                conn, signal_account_features, columns, "ON CONFLICT DO NOTHING"
            )
    elif rows:
        conn.execute(
            _insert(conn, signal_account_features).on_conflict_do_nothing(
                index_elements=["account_id", "kind", "value"]
            ),
            [dict(zip(_FEATURE_COLUMNS, row, strict=True)) for row in rows],
        )


def add_counts(
    conn: Connection,
    increments: dict[tuple[str, str, int, int], int],
    table: sa.Table = signal_counts,
) -> None:
    """Add to the (kind, value, width, bucket) counters of ``table`` (``signal_counts`` or
    ``signal_suspect_counts``): one multi-row upsert.

    Rows go in key order so concurrent workers lock shared counters in the same order: on
    PostgreSQL the statement sorts them (``ORDER BY`` in byte order, the order of Python's
    sort of the same keys), a third of the cost of sorting a batch's ~9,000 key tuples in
    Python.
    """
    if not increments:
        return
    if _pg(conn):
        kinds, values, widths, buckets = zip(*increments, strict=True)
        db.pg_bulk_insert_columns(
            conn,
            table,
            {
                "kind": kinds,
                "value": values,
                "width_s": widths,
                "bucket_s": buckets,
                "count": list(increments.values()),
            },
            'AS u(k, v, w, b, n) ORDER BY u.k COLLATE "C", u.v COLLATE "C", u.w, u.b '
            "ON CONFLICT (kind, value, width_s, bucket_s) DO UPDATE SET count = t.count + "
            "excluded.count",
        )
        return
    ordered = sorted(increments.items())
    rows = [
        {"kind": k, "value": v, "width_s": w, "bucket_s": b, "count": n}
        for (k, v, w, b), n in ordered
    ]
    stmt = _insert(conn, table)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["kind", "value", "width_s", "bucket_s"],
            set_={"count": table.c.count + stmt.excluded.count},
        ),
        rows,
    )


_PG_COUNTS = {
    name: sa.text(
        "SELECT array_agg(s.n ORDER BY k.i) "
        "FROM unnest(CAST(:kinds AS text[]), CAST(:vals AS text[])) WITH ORDINALITY "
        "AS k(kind, value, i) "
        f"CROSS JOIN LATERAL (SELECT sum(c.count) AS n FROM {name} c "
        "WHERE c.kind = k.kind AND c.value = k.value "
        "AND c.width_s = :width AND c.bucket_s BETWEEN :first AND :last) AS s"
    )
    for name in (signal_counts.name, signal_suspect_counts.name)
}
"""Each value's sum in the keys' order, as one array (NULL for a value without counters): one
lookup of the primary key per value (``LATERAL``), whatever the statistics say; a join let the
planner pick a sort of the whole table, or the bucket index, as the table grew."""


def read_counts(
    conn: Connection,
    keys: Iterable[ValueKey],
    width_s: int,
    first_s: int,
    last_s: int,
    table: sa.Table = signal_counts,
) -> dict[ValueKey, int]:
    """Sum of each value's counters of ``table`` over buckets ``first_s..last_s`` of width
    ``width_s`` (values without any are left out)."""
    ordered = sorted(set(keys))
    if not ordered:
        return {}
    if _pg(conn):
        sums = conn.execute(
            _PG_COUNTS[table.name],
            {
                "kinds": _texts(k for k, _ in ordered),
                "vals": _texts(v for _, v in ordered),
                "width": width_s,
                "first": first_s,
                "last": last_s,
            },
        ).scalar_one()
        return {key: int(n) for key, n in zip(ordered, sums, strict=True) if n is not None}
    t = table
    out: dict[ValueKey, int] = {}
    for part in _chunks(ordered, 400):
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


_PG_PARTNERS = sa.text(
    "SELECT f.kind, f.value, f.account_id, f.seen_s "
    "FROM unnest(CAST(:kinds AS text[]), CAST(:vals AS text[])) AS k(kind, value) "
    "JOIN signal_account_features f ON f.kind = k.kind AND f.value = k.value "
    "AND f.seen_s >= :since"
)


def partners(
    conn: Connection, keys: Iterable[ValueKey], since_s: int
) -> list[tuple[str, str, str, int]]:
    """(kind, value, account_id, seen_s) of accounts showing one of ``keys`` since ``since_s``."""
    ordered = sorted(set(keys))
    if not ordered:
        return []
    if _pg(conn):
        rows = conn.execute(
            _PG_PARTNERS,
            {
                "kinds": _texts(k for k, _ in ordered),
                "vals": _texts(v for _, v in ordered),
                "since": since_s,
            },
        )
        return [(r.kind, r.value, r.account_id, int(r.seen_s)) for r in rows]
    t = signal_account_features
    out: list[tuple[str, str, str, int]] = []
    for part in _chunks(ordered, 400):
        rows = conn.execute(
            sa.select(t.c.kind, t.c.value, t.c.account_id, t.c.seen_s).where(
                sa.tuple_(t.c.kind, t.c.value).in_(list(part)), t.c.seen_s >= since_s
            )
        )
        out.extend((r.kind, r.value, r.account_id, int(r.seen_s)) for r in rows)
    return out


_PG_HOLDERS = sa.text(
    "SELECT k.kind, k.value, h.holders "
    "FROM unnest(CAST(:kinds AS text[]), CAST(:vals AS text[])) AS k(kind, value) "
    "CROSS JOIN LATERAL (SELECT array_agg(f.account_id) AS holders "
    "FROM signal_account_features f WHERE f.kind = k.kind AND f.value = k.value "
    "AND f.seen_s >= :since) AS h WHERE h.holders IS NOT NULL"
)
"""One index range (kind, value, seen_s >= since) per value (``LATERAL``): a join let the
planner sort the whole table, in parallel workers, once it guessed few matches."""


def holders(conn: Connection, keys: Iterable[ValueKey], since_s: int) -> dict[ValueKey, set[str]]:
    """Accounts showing each of ``keys`` since ``since_s`` (what :func:`partners` returns,
    grouped by value; one row per value on PostgreSQL)."""
    ordered = sorted(set(keys))
    if not ordered:
        return {}
    out: dict[ValueKey, set[str]] = {}
    if _pg(conn):
        rows = conn.execute(
            _PG_HOLDERS,
            {
                "kinds": _texts(k for k, _ in ordered),
                "vals": _texts(v for _, v in ordered),
                "since": since_s,
            },
        )
        for kind, value, accounts in rows.tuples():
            out[(kind, value)] = set(accounts)
        return out
    for kind, value, account_id, _seen_s in partners(conn, ordered, since_s):
        out.setdefault((kind, value), set()).add(account_id)
    return out


def read_accounts(conn: Connection, account_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    t = signal_accounts
    out: dict[str, dict[str, Any]] = {}
    for among in _among(conn, t.c.account_id, account_ids):
        result = conn.execute(sa.select(t).where(among))
        names = list(result.keys())
        for row in result.tuples():
            account = dict(zip(names, row, strict=True))
            out[account["account_id"]] = account
    return out


def upsert_accounts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert accounts or OR their flags into the stored ones (cluster_id is not touched)."""
    if not rows:
        return
    rows = sorted(rows, key=lambda r: r["account_id"])
    if _pg(conn):
        _pg_bulk(
            conn,
            signal_accounts,
            rows,
            "ON CONFLICT (account_id) DO UPDATE SET ai_face = t.ai_face OR excluded.ai_face, "
            "reused_photo = t.reused_photo OR excluded.reused_photo, "
            "burst = t.burst OR excluded.burst",
        )
        return
    t = signal_accounts
    stmt = _insert(conn, t)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["account_id"],
            set_={
                "ai_face": sa.or_(t.c.ai_face, stmt.excluded.ai_face),
                "reused_photo": sa.or_(t.c.reused_photo, stmt.excluded.reused_photo),
                "burst": sa.or_(t.c.burst, stmt.excluded.burst),
            },
        ),
        rows,
    )


def lock_clusters(conn: Connection, cluster_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Lock the clusters (``SELECT ... FOR UPDATE``, in id order) and return those that exist."""
    ids = sorted(set(cluster_ids))
    if not ids:
        return {}
    t = signal_clusters
    rows = conn.execute(
        sa.select(
            t.c.cluster_id,
            t.c.size,
            t.c.ai_faces,
            t.c.reused_photos,
            t.c.burst_members,
            t.c.created_s,
        )
        .where(t.c.cluster_id.in_(ids))
        .order_by(t.c.cluster_id)
        .with_for_update()
    )
    return {r.cluster_id: dict(r._mapping) for r in rows}


def cluster_of(conn: Connection, account_ids: Iterable[str]) -> dict[str, str | None]:
    t = signal_accounts
    out: dict[str, str | None] = {}
    for among in _among(conn, t.c.account_id, account_ids):
        rows = conn.execute(sa.select(t.c.account_id, t.c.cluster_id).where(among))
        out.update({r.account_id: r.cluster_id for r in rows})
    return out


_PG_REPOINT = sa.text(
    "UPDATE signal_accounts AS a SET cluster_id = m.survivor "
    "FROM unnest(CAST(:old AS text[]), CAST(:new AS text[])) AS m(old, survivor) "
    "WHERE a.cluster_id = m.old"
)
_PG_ATTACH = sa.text(
    "UPDATE signal_accounts AS a SET cluster_id = m.cluster "
    "FROM unnest(CAST(:accounts AS text[]), CAST(:clusters AS text[])) AS m(account, cluster) "
    "WHERE a.account_id = m.account AND a.cluster_id IS NULL "
    "RETURNING a.account_id, a.ai_face, a.reused_photo, a.burst"
)


def repoint_clusters(conn: Connection, moves: dict[str, str]) -> None:
    """Move every member of each merged cluster (key) into its survivor (value); one statement
    on PostgreSQL. The merged clusters' rows are deleted by :func:`delete_clusters`."""
    if not moves:
        return
    old = sorted(moves)
    if _pg(conn):
        conn.execute(_PG_REPOINT, {"old": _texts(old), "new": _texts(moves[c] for c in old)})
        return
    for c in old:
        conn.execute(
            signal_accounts.update()
            .where(signal_accounts.c.cluster_id == c)
            .values(cluster_id=moves[c])
        )


def attach_unclustered(conn: Connection, placement: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Put each account (key) that is in no cluster into its cluster (value); returns the flags
    (``ai_face``, ``reused_photo``, ``burst``) of those moved, as stored at the move. Fewer than
    asked means a concurrent worker clustered one meanwhile."""
    if not placement:
        return {}
    accounts = sorted(placement)
    if _pg(conn):
        rows = conn.execute(
            _PG_ATTACH,
            {"accounts": _texts(accounts), "clusters": _texts(placement[a] for a in accounts)},
        )
        return {r.account_id: dict(r._mapping) for r in rows}
    t = signal_accounts
    moved = []
    for a in accounts:
        result = conn.execute(
            t.update()
            .where(t.c.account_id == a, t.c.cluster_id.is_(None))
            .values(cluster_id=placement[a])
        )
        if result.rowcount:
            moved.append(a)
    rows = conn.execute(
        sa.select(t.c.account_id, t.c.ai_face, t.c.reused_photo, t.c.burst).where(
            t.c.account_id.in_(moved)
        )
    )
    return {r.account_id: dict(r._mapping) for r in rows}


def merge_cluster_features(conn: Connection, moves: dict[str, str]) -> None:
    """Add the feature counts of each merged cluster (key) to its survivor's (value)."""
    t = signal_cluster_features
    for old in sorted(moves):
        src = sa.select(
            sa.literal(moves[old]).label("cluster_id"), t.c.kind, t.c.value, t.c.label, t.c.members
        ).where(t.c.cluster_id == old)
        stmt = _insert(conn, t).from_select(
            ["cluster_id", "kind", "value", "label", "members"], src
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["cluster_id", "kind", "value"],
                set_={"members": t.c.members + stmt.excluded.members},
            )
        )


def add_cluster_features(
    conn: Connection, increments: dict[tuple[str, str, str], tuple[str, int]]
) -> None:
    """Add members to (cluster, kind, value) counts; ``increments`` maps to (label, members)."""
    if not increments:
        return
    rows = [
        {"cluster_id": c, "kind": k, "value": v, "label": label, "members": n}
        for (c, k, v), (label, n) in sorted(increments.items())
    ]
    t = signal_cluster_features
    if _pg(conn):
        _pg_bulk(
            conn,
            t,
            rows,
            "ON CONFLICT (cluster_id, kind, value) DO UPDATE SET members = t.members + "
            "excluded.members",
        )
        return
    stmt = _insert(conn, t)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["cluster_id", "kind", "value"],
            set_={"members": t.c.members + stmt.excluded.members},
        ),
        rows,
    )


def delete_clusters(conn: Connection, cluster_ids: Iterable[str]) -> None:
    """Delete merged-away clusters and their feature counts."""
    ids = sorted(set(cluster_ids))
    if ids:
        t = signal_cluster_features
        conn.execute(t.delete().where(t.c.cluster_id.in_(ids)))
        conn.execute(signal_clusters.delete().where(signal_clusters.c.cluster_id.in_(ids)))


def cluster_binding(
    conn: Connection, cluster_ids: Sequence[str]
) -> dict[str, list[tuple[str, str, str, int]]]:
    """Per cluster: (kind, value, label, members) of every value shared by at least two members."""
    t = signal_cluster_features
    out: dict[str, list[tuple[str, str, str, int]]] = {}
    for among in _among(conn, t.c.cluster_id, cluster_ids):
        rows = conn.execute(
            sa.select(t.c.cluster_id, t.c.kind, t.c.value, t.c.label, t.c.members).where(
                among, t.c.members >= 2
            )
        )
        for r in rows:
            out.setdefault(r.cluster_id, []).append((r.kind, r.value, r.label, int(r.members)))
    return out


_CLUSTER_COLUMNS = (
    "size",
    "ai_faces",
    "reused_photos",
    "burst_members",
    "score",
    "parts",
    "binding",
    "updated_s",
)


def save_clusters(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or overwrite clusters (the caller holds their locks, or created them)."""
    if not rows:
        return
    rows = sorted(rows, key=lambda r: r["cluster_id"])
    if _pg(conn):
        sets = ", ".join(f"{k} = excluded.{k}" for k in _CLUSTER_COLUMNS)
        _pg_bulk(conn, signal_clusters, rows, f"ON CONFLICT (cluster_id) DO UPDATE SET {sets}")
        return
    stmt = _insert(conn, signal_clusters)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["cluster_id"], set_={k: stmt.excluded[k] for k in _CLUSTER_COLUMNS}
        ),
        rows,
    )


def read_clusters(conn: Connection, cluster_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    t = signal_clusters
    out: dict[str, dict[str, Any]] = {}
    for among in _among(conn, t.c.cluster_id, cluster_ids):
        rows = conn.execute(sa.select(t).where(among))
        out.update({r.cluster_id: dict(r._mapping) for r in rows})
    return out


def delete_older_than(conn: Connection, cutoff_s: int) -> dict[str, int]:
    """Retention: delete counters (plain and suspect), account features and results older
    than ``cutoff_s``."""
    deleted = {}
    for name, stmt in (
        ("counts", signal_counts.delete().where(signal_counts.c.bucket_s < cutoff_s)),
        (
            "suspect_counts",
            signal_suspect_counts.delete().where(signal_suspect_counts.c.bucket_s < cutoff_s),
        ),
        (
            "features",
            signal_account_features.delete().where(signal_account_features.c.seen_s < cutoff_s),
        ),
        ("results", signal_results.delete().where(signal_results.c.created_s < cutoff_s)),
    ):
        deleted[name] = int(conn.execute(stmt).rowcount or 0)
    return deleted
