"""Lookup latency and ingest rate of the hash index at 1e5..1e7 stored hashes, against peers.

    ops/services.sh start && eval "$(ops/services.sh env)"
    .venv/bin/python bench/bench_dedupe_scale.py --sizes 100000 1000000 10000000 [--queries 500]

One run measures, on the same synthetic index (uniform random 64-bit hashes plus planted
near-duplicates at distance 0..radius of the queries): a numpy linear scan (baseline), FAISS
``IndexBinaryFlat`` and ``IndexBinaryMultiHash`` (3 tables of 21 bits, 1-bit flips: the same
multi-index scheme as the database), ``InMemoryHashIndex`` (up to 1e6) and the
PostgreSQL index on a fresh database of the server in UNMASK_DATABASE__URL. PostgreSQL is
bulk-loaded the way a large index is built (COPY into the table without its band indexes, then
CREATE INDEX); ingest with every index in place is measured separately through
``PostgresHashIndex.copy_in`` (COPY) and ``add`` (multi-row INSERT). Lookups are timed two
ways: ``search_in`` on one held connection (what the dedupe stage does for a batch) and
``PostgresHashIndex.search`` (checks a connection out of the pool per call). Every
implementation must return the planted neighbours; the script fails otherwise. The load
average is printed before and after each size (the machine is shared). Results: one JSON
object per size.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import uuid
from collections.abc import Callable

import faiss
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipeline.dedupe.index import IndexedHash, InMemoryHashIndex, plan_for
from pipeline.dedupe.sql_index import PostgresHashIndex, search_in
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade

RADIUS = 4
BAND_INDEXES = ("ix_photo_hashes_b0", "ix_photo_hashes_b1", "ix_photo_hashes_b2")


def percentiles(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3),
            "lookups_per_s": round(len(a) / (a.sum() / 1000), 1)}


def timed(queries: np.ndarray, fn: Callable[[int], set[int]], expect: list[set[int]]
          ) -> dict[str, float]:
    samples = []
    for i, q in enumerate(queries):
        t = time.perf_counter()
        got = fn(int(q))
        samples.append(time.perf_counter() - t)
        if not expect[i] <= got:
            raise AssertionError(f"query {i}: missing planted neighbours {expect[i] - got}")
    return percentiles(samples)


def to_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(">u8").view(np.uint8).reshape(-1, 8)


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> int:
    global RADIUS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--radius", type=int, default=4,
                        help="Hamming radius searched (4: the verified clause; 6: the crop "
                        "candidates' dedupe.candidate_radius)")
    args = parser.parse_args()
    RADIUS = args.radius
    rng = np.random.default_rng(0)
    for n in args.sizes:
        print(json.dumps(measure(n, args, rng)), flush=True)
    return 0


def measure(n: int, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, object]:
    out: dict[str, object] = {"stored": n, "radius": RADIUS, "queries": args.queries,
                              "load_before": load()}
    values = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, n, dtype=np.uint64)
    queries = rng.integers(0, 2**63, args.queries, dtype=np.uint64) * np.uint64(2)
    expect: list[set[int]] = []
    for i, q in enumerate(queries):  # plant one neighbour per query at distance i % (r+1)
        flips = rng.choice(64, i % (RADIUS + 1), replace=False)
        v = int(q)
        for b in flips:
            v ^= 1 << int(b)
        values[i * (n // args.queries)] = np.uint64(v)
        expect.append({i * (n // args.queries)})

    def linear(q: int) -> set[int]:
        d = np.bitwise_count(values ^ np.uint64(q))
        return set(np.nonzero(d <= RADIUS)[0].tolist())

    out["numpy_linear"] = timed(queries[:50], linear, expect[:50])

    codes = to_bytes(values)
    qcodes = to_bytes(queries)
    flat = faiss.IndexBinaryFlat(64)
    flat.add(codes)
    position = {int(q): i for i, q in enumerate(queries)}

    def faiss_flat(q_index: int) -> set[int]:
        lims, _d, ids = flat.range_search(qcodes[q_index:q_index + 1], RADIUS + 1)
        return set(ids[lims[0]:lims[1]].tolist())

    out["faiss_flat"] = timed(queries[:50], lambda q: faiss_flat(position[q]), expect[:50])
    t = time.perf_counter()
    mih = faiss.IndexBinaryMultiHash(64, 3, 21)  # the PostgreSQL scheme: 3 bands
    mih.nflip = max(0, -(-(RADIUS - 2) // 3))  # exact up to 3 * nflip + 2 bits
    mih.add(codes)
    out["faiss_multihash_build_s"] = round(time.perf_counter() - t, 2)

    def faiss_mih(q_index: int) -> set[int]:
        lims, _d, ids = mih.range_search(qcodes[q_index:q_index + 1], RADIUS + 1)
        return set(ids[lims[0]:lims[1]].tolist())

    out["faiss_multihash"] = timed(queries, lambda q: faiss_mih(position[q]), expect)

    if n <= 1_000_000:
        mem = InMemoryHashIndex(RADIUS)
        t = time.perf_counter()
        mem.add([IndexedHash(str(i), "phash", "phash", int(v)) for i, v in enumerate(values)])
        out["memory_ingest_per_s"] = round(n / (time.perf_counter() - t))
        out["in_memory"] = timed(
            queries, lambda q: {int(h.photo_id) for h in mem.search("phash", [q])}, expect)
        del mem

    url = os.environ.get("UNMASK_DATABASE__URL", "")
    if not args.skip_postgres and url.startswith("postgresql"):
        out["postgres"] = postgres(url, values, queries, expect)
    out["load_after"] = load()
    return out


def copy_text(start: int, values: np.ndarray) -> io.StringIO:
    """COPY rows of ``values`` (photo ids ``start``...), bands split with numpy."""
    bands = plan_for(RADIUS).split_array(values).astype(np.int64)
    signed = values.view(np.int64)
    ids = np.arange(start, start + len(values))
    lines = map("{}\tphash\tphash\t{}\t{}\t{}\t{}".format,
                ids.tolist(), signed.tolist(), bands[:, 0].tolist(), bands[:, 1].tolist(),
                bands[:, 2].tolist())
    return io.StringIO("\n".join(lines) + "\n")


def bulk_load(engine: sa.Engine, values: np.ndarray) -> dict[str, float]:
    """COPY without the band indexes, then build them; seconds of each step."""
    with engine.begin() as conn:
        for name in BAND_INDEXES:
            conn.execute(sa.text(f"DROP INDEX {name}"))
    t = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        chunk = 500_000
        for start in range(0, len(values), chunk):
            cur.copy_expert(
                "COPY photo_hashes (photo_id, family, kind, value, b0, b1, b2) FROM STDIN",
                copy_text(start, values[start:start + chunk]))
        raw.commit()
    finally:
        raw.close()
    copy_s = time.perf_counter() - t
    t = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '256MB'"))
        for i, name in enumerate(BAND_INDEXES):
            conn.execute(sa.text(f"CREATE INDEX {name} ON photo_hashes (family, b{i})"))
        conn.execute(sa.text("ANALYZE photo_hashes"))
    return {"copy_s": round(copy_s, 1), "create_indexes_s": round(time.perf_counter() - t, 1),
            "rows_per_s": round(len(values) / (copy_s + time.perf_counter() - t))}


def postgres(url: str, values: np.ndarray, queries: np.ndarray, expect: list[set[int]]
             ) -> dict[str, object]:
    server = make_url(url)
    name = f"unmask_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = server.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(db_url)
    try:
        upgrade(db_url)
        index = PostgresHashIndex(engine, RADIUS)
        result: dict[str, object] = {"bulk_load": bulk_load(engine, values)}
        extra = np.random.default_rng(1).integers(0, 2**63, 100_000, dtype=np.uint64)
        t = time.perf_counter()
        index.copy_in([IndexedHash(f"c{i}", "phash", "phash", int(v))
                       for i, v in enumerate(extra)])
        result["copy_ingest_per_s"] = round(len(extra) / (time.perf_counter() - t))
        t = time.perf_counter()
        index.add([IndexedHash(f"m{i}", "phash", "phash", int(v))
                   for i, v in enumerate(extra[:10_000])])
        result["multirow_insert_per_s"] = round(10_000 / (time.perf_counter() - t))
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE photo_hashes"))
            result["table_and_indexes_mb"] = round(conn.execute(sa.text(
                "SELECT pg_total_relation_size('photo_hashes')")).scalar_one() / 2**20)

        def planted(hits: list[object]) -> set[int]:
            return {int(h.photo_id) for h in hits  # type: ignore[attr-defined]
                    if h.photo_id[0].isdigit()}  # type: ignore[attr-defined]

        with engine.connect() as conn:
            for q in queries[:20]:  # warm the prepared statement and the cache
                search_in(conn, RADIUS, "phash", [int(q)])
            result["held_connection"] = timed(
                queries, lambda q: planted(search_in(conn, RADIUS, "phash", [q])), expect)
            plan = conn.execute(sa.text(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE unmask_dedupe_search"
                "('phash', :p0, :p1, :p2)"),
                {f"p{i}": list(v) for i, v in enumerate(plan_for(RADIUS).probes(int(queries[0])))}
            ).scalar_one()
            result["server_execution_ms"] = plan[0]["Execution Time"]
            result["server_planning_ms"] = plan[0]["Planning Time"]
        result["pool_checkout_per_call"] = timed(
            queries, lambda q: planted(index.search("phash", [q])), expect)
        return result
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
