"""The hash index in the database (``photo_hashes``): PostgreSQL in production, SQLite embedded.

A search is one statement for all its query hashes: the three band indexes are probed with every
band value within the probe radius (``BandPlan.probes``), PostgreSQL combines them with a
BitmapOr, and the few candidates are verified here by popcount. On PostgreSQL the statement is a
server-side prepared statement taking arrays (one round trip, no per-call planning).
``PostgresHashIndex`` adds a COPY path for bulk loads (the bank, benchmarks); everything else is
shared and works on both dialects.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.dedupe.bands import BandPlan, from_signed64, hamming, to_signed64
from pipeline.dedupe.index import (
    BANDS,
    HashHit,
    IndexedHash,
    check_radius,
    plan_for,
    sort_hits,
)
from pipeline.store.db import insert_ignore, pg_execute_prepared
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
    """The portable search: ``(family = f AND b0 IN p0) OR (family = f AND b1 IN p1) OR ...``.

    The family test sits inside every OR term so that each term matches one ``(family, bN)``
    index and SQLite unions three index searches ("MULTI-INDEX OR"). With the family outside
    the OR, SQLite searched the ``(family)`` prefix alone, i.e. every stored hash of the family,
    on each search: the embedded demo (``bash ops/demo.sh``) slowed from ~30 to ~9 events/s as
    its index filled, and its replay of 3,160 events took 3 min 33 s; now 1 min 44 s at a
    steady ~30 events/s, with the same decisions. PostgreSQL runs its own prepared statement.
    """
    t = photo_hashes
    family: sa.BindParameter[str] = sa.bindparam("family", type_=sa.String())
    clauses = [
        sa.and_(t.c.family == family, t.c[f"b{i}"].in_(sa.bindparam(f"p{i}", expanding=True)))
        for i in range(BANDS)
    ]
    return sa.select(t.c.photo_id, t.c.kind, t.c.value).where(sa.or_(*clauses))


_SEARCH = _search_statement()

PG_STATEMENT = "unmask_dedupe_search"
"""Name of the server-side prepared search statement (one per PostgreSQL session)."""
_PG_PREPARE = (
    f"PREPARE {PG_STATEMENT}(text, integer[], integer[], integer[]) AS "
    "SELECT photo_id, kind, value FROM photo_hashes "
    "WHERE family = $1 AND (b0 = ANY($2) OR b1 = ANY($3) OR b2 = ANY($4))"
)
_PG_EXECUTE = f"EXECUTE {PG_STATEMENT}(%s, %s, %s, %s)"


def _band_probes(queries: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Every probe value of every ``(query, radius)``, per band, deduplicated (one statement for
    all; each query probed at its own radius)."""
    per_band: list[set[int]] = [set() for _ in range(BANDS)]
    plans: dict[int, BandPlan] = {}
    for q, radius in queries:
        plan = plans.get(radius)
        if plan is None:
            plan = plans[radius] = plan_for(radius)
        for i, values in enumerate(plan.probes(q)):
            per_band[i].update(values)
    return [sorted(values) for values in per_band]


def _candidates(conn: Connection, family: str, probes: list[list[int]]
                ) -> list[tuple[str, str, int]]:
    """Rows ``(photo_id, kind, signed value)`` sharing a probed band value: one round trip.

    On PostgreSQL a server-side prepared statement run with array parameters
    (``pg_execute_prepared``): no SQL compilation, no planning of a literal list, one round
    trip. Elsewhere it is the SQLAlchemy statement.
    """
    if conn.dialect.name != "postgresql":
        params: dict[str, Any] = {"family": family}
        for i, values in enumerate(probes):
            params[f"p{i}"] = values
        return [(r[0], r[1], int(r[2])) for r in conn.execute(_SEARCH, params)]
    rows = pg_execute_prepared(conn, PG_STATEMENT, _PG_PREPARE, _PG_EXECUTE, (family, *probes))
    return [(r[0], r[1], int(r[2])) for r in rows]


def search_in(conn: Connection, radius: int, family: str, queries: Sequence[int],
              max_radius: int | None = None) -> list[HashHit]:
    """Every stored hash of ``family`` within ``radius`` bits of each query, using ``conn``.

    All queries go to the database in one statement; the candidates are verified here by
    popcount against every query. ``max_radius`` (the index's radius) is accepted for the
    ``HashIndex`` callers and changes nothing: probing at ``radius`` is exact.
    """
    del max_radius
    return search_radii(conn, family, [(q, radius) for q in queries])


def search_radii(conn: Connection, family: str, queries: Sequence[tuple[int, int]]
                 ) -> list[HashHit]:
    """Every stored hash of ``family`` within ``radius`` bits of ``value``, for each
    ``(value, radius)`` of ``queries`` (hit ``query`` = its position), using ``conn``.

    One statement for all queries, each probed at its own radius (a query at radius <= 2 costs
    one probe per band, at 3-5 bits 1 + 21 or 22); the rows are checked here by popcount.
    """
    if not queries:
        return []
    rows = _candidates(conn, family, _band_probes(queries))
    hits = []
    seen: set[tuple[str, str]] = set()
    for photo_id, kind, value in rows:
        if (photo_id, kind) in seen:
            continue
        seen.add((photo_id, kind))
        stored = from_signed64(value)
        for position, (q, radius) in enumerate(queries):
            d = hamming(q, stored)
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
        plan = plan_for(self.radius)
        buf = io.StringIO()
        for h in hashes:
            b0, b1, b2 = plan.split(h.value)
            buf.write(f"{h.photo_id}\t{h.family}\t{h.kind}\t{to_signed64(h.value)}\t"
                      f"{b0}\t{b1}\t{b2}\n")
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
