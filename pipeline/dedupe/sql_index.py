"""The hash index in the database (``photo_hashes``): PostgreSQL in production, SQLite embedded.

A search is one statement per query hash: the three band indexes are probed with every band
value within the probe radius (``BandPlan.probes``), PostgreSQL combines them with a BitmapOr,
and the few candidates are verified here by popcount. ``PostgresHashIndex`` adds a COPY path
for bulk loads (the bank, benchmarks); everything else is shared and works on both dialects.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.dedupe.bands import from_signed64, hamming, to_signed64
from pipeline.dedupe.index import (
    BANDS,
    HashHit,
    IndexedHash,
    check_radius,
    plan_for,
    sort_hits,
)
from pipeline.store.db import insert_ignore
from pipeline.store.dedupe_tables import photo_hashes


def hash_rows(hashes: Sequence[IndexedHash], radius: int) -> list[dict[str, Any]]:
    """Rows of ``photo_hashes`` for ``hashes`` (bands split, value as signed BIGINT)."""
    plan = plan_for(radius)
    rows = []
    for h in hashes:
        bands = plan.split(h.value)
        row: dict[str, Any] = {
            "photo_id": h.photo_id, "family": h.family, "kind": h.kind,
            "value": to_signed64(h.value),
        }
        for i in range(BANDS):
            row[f"b{i}"] = bands[i]
        rows.append(row)
    return rows


def _search_statement() -> sa.Select[Any]:
    t = photo_hashes
    clauses = [
        t.c[f"b{i}"].in_(sa.bindparam(f"p{i}", expanding=True)) for i in range(BANDS)
    ]
    return sa.select(t.c.photo_id, t.c.kind, t.c.value).where(
        t.c.family == sa.bindparam("family"), sa.or_(*clauses)
    )


_SEARCH = _search_statement()


def search_in(conn: Connection, radius: int, family: str, queries: Sequence[int],
              max_radius: int | None = None) -> list[HashHit]:
    """Every stored hash of ``family`` within ``radius`` bits of each query, using ``conn``."""
    plan = plan_for(radius if max_radius is None else max_radius)
    hits = []
    for position, q in enumerate(queries):
        params: dict[str, Any] = {"family": family}
        for i, values in enumerate(plan.probes(q)):
            params[f"p{i}"] = list(values)
        seen: set[tuple[str, str]] = set()
        for photo_id, kind, value in conn.execute(_SEARCH, params):
            if (photo_id, kind) in seen:
                continue
            seen.add((photo_id, kind))
            d = hamming(q, from_signed64(int(value)))
            if d <= radius:
                hits.append(HashHit(photo_id, kind, d, position))
    return sort_hits(hits)


def add_in(conn: Connection, radius: int, hashes: Sequence[IndexedHash]) -> int:
    """Insert ``hashes`` with ``conn`` (multi-row, ignoring ones already stored); returns new."""
    return insert_ignore(conn, photo_hashes, hash_rows(hashes, radius), ["photo_id", "kind"])


class SqlHashIndex:
    """``HashIndex`` over the ``photo_hashes`` table; any SQLAlchemy engine (PostgreSQL, SQLite).

    Each call runs in its own transaction. Safe to share between threads (the engine pools).
    """

    def __init__(self, engine: Engine, radius: int) -> None:
        self.engine = engine
        self.radius = radius

    def add(self, hashes: Sequence[IndexedHash]) -> int:
        with self.engine.begin() as conn:
            return add_in(conn, self.radius, hashes)

    def search(self, family: str, queries: Sequence[int], radius: int | None = None
               ) -> list[HashHit]:
        r = check_radius(self.radius, radius)
        with self.engine.connect() as conn:
            return search_in(conn, r, family, queries, max_radius=self.radius)

    def remove(self, photo_id: str) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(photo_hashes.delete().where(photo_hashes.c.photo_id == photo_id))
            return int(result.rowcount or 0)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(photo_hashes))
                       .scalar_one())


class PostgresHashIndex(SqlHashIndex):
    """``SqlHashIndex`` with a COPY bulk load (PostgreSQL only).

    ``copy_in`` is for loads into an index nobody else writes the same photos to: it does not
    skip hashes already stored (a duplicate ``(photo_id, kind)`` fails the whole COPY).
    """

    def copy_in(self, hashes: Sequence[IndexedHash]) -> int:
        buf = io.StringIO()
        for row in hash_rows(hashes, self.radius):
            buf.write(
                f"{row['photo_id']}\t{row['family']}\t{row['kind']}\t{row['value']}\t"
                f"{row['b0']}\t{row['b1']}\t{row['b2']}\n"
            )
        buf.seek(0)
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.copy_expert(
                "COPY photo_hashes (photo_id, family, kind, value, b0, b1, b2) FROM STDIN",
                buf,
            )
            raw.commit()
        finally:
            raw.close()
        return len(hashes)
