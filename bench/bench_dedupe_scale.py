"""Lookup latency and ingest rate of the hash index at 1e5..1e7 stored hashes, against peers.

    ops/services.sh start && eval "$(ops/services.sh env)"
    .venv/bin/python bench/bench_dedupe_scale.py --sizes 100000 1000000 [--queries 500]

One run measures, on the same synthetic index (uniform random 64-bit hashes plus planted
near-duplicates at distance 0..radius of the queries): a numpy linear scan (baseline), FAISS
``IndexBinaryFlat`` and ``IndexBinaryMultiHash``, ``InMemoryHashIndex`` (up to 1e6) and
``PostgresHashIndex`` on a fresh database of the server in UNMASK_DATABASE__URL (COPY ingest,
then single-query lookups). Every implementation must return the planted neighbours; the
script fails otherwise. Results: one JSON object per size.
"""

from __future__ import annotations

import argparse
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

from pipeline.dedupe.index import IndexedHash, InMemoryHashIndex
from pipeline.dedupe.sql_index import PostgresHashIndex
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade

RADIUS = 4


def percentiles(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        print(json.dumps(measure(n, args, rng)), flush=True)
    return 0


def measure(n: int, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, object]:
    out: dict[str, object] = {"stored": n, "radius": RADIUS, "queries": args.queries}
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

    def faiss_flat(q_index: int) -> set[int]:
        lims, _d, ids = flat.range_search(qcodes[q_index:q_index + 1], RADIUS + 1)
        return set(ids[lims[0]:lims[1]].tolist())

    position = {int(q): i for i, q in enumerate(queries)}
    out["faiss_flat"] = timed(queries[:100], lambda q: faiss_flat(position[q]), expect[:100])
    t = time.perf_counter()
    mih = faiss.IndexBinaryMultiHash(64, RADIUS + 1, 12)
    mih.nflip = 0
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

    url = os.environ.get("UNMASK_DATABASE__URL", "")
    if not args.skip_postgres and url.startswith("postgresql"):
        out["postgres"] = postgres(url, values, queries, expect)
    return out


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
        t = time.perf_counter()
        chunk = 200_000
        for start in range(0, len(values), chunk):
            index.copy_in([IndexedHash(str(start + i), "phash", "phash", int(v))
                           for i, v in enumerate(values[start:start + chunk])])
        ingest = len(values) / (time.perf_counter() - t)
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE photo_hashes"))
            size = conn.execute(sa.text(
                "SELECT pg_total_relation_size('photo_hashes')")).scalar_one()
        t = time.perf_counter()
        index.add([IndexedHash(f"m{i}", "phash", "phash", int(v))
                   for i, v in enumerate(values[:20_000])])
        multirow = 20_000 / (time.perf_counter() - t)
        result: dict[str, object] = {
            "copy_ingest_per_s": round(ingest), "multirow_insert_per_s": round(multirow),
            "table_and_indexes_mb": round(size / 2**20)}
        stats = timed(queries, lambda q: {int(h.photo_id) for h in index.search("phash", [q])
                                          if not h.photo_id.startswith("m")}, expect)
        result.update(stats)
        return result
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
