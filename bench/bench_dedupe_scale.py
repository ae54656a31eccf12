"""Lookup latency and ingest rate of the hash index at 1e5..1e7 stored hashes, against peers.

    ops/services.sh start && eval "$(ops/services.sh env)"
    nice -n 5 .venv/bin/python bench/bench_dedupe_scale.py --sizes 100000 1000000 10000000 \
        [--queries 500]

Synthetic index in the stage's proportions: each photo stores ``ROWS_PER_PHOTO`` rows (the
kinds ``indexed_hashes`` gives a photo without a border: plain, mirror, centred crops and the
crop windows, with mirrors), a random 64-bit base hash and the other kinds 4-14 bits from it,
as on real photos; plus one planted photo per query whose plain hash lies 0..4 bits from the
query's. A lookup is what the dedupe stage runs for one avatar under the configured
``MatchRule`` (``query_hashes``: the plain pHash at the search radius and the query's crop
windows at ``window_radius``, in ONE statement). One run measures, on the same data: a numpy
linear scan (baseline), FAISS ``IndexBinaryFlat`` and ``IndexBinaryMultiHash`` (3 tables of 21
bits, the database's scheme), ``InMemoryHashIndex`` (up to 1e6) and PostgreSQL on a fresh
database of the server in UNMASK_DATABASE__URL, timed two ways on one held connection: the
index statement alone (``search_radii``) and the stage's whole ``find_matches`` (index
statement, sha256 lookup, read of the candidate photos' rows, the hash clauses; the synthetic
photos have no thumbnails, so no keypoint verification runs: that cost is measured on real
photos by bench_dedupe_lookup.py). PostgreSQL is bulk-loaded the way a large index is built
(COPY without the band indexes, then CREATE INDEX); ingest with every index in place is
measured separately through ``PostgresHashIndex.copy_in``. Every implementation must return
the planted neighbours; the script fails otherwise. The load average is printed before and
after each size (the machine is shared). Results: one JSON object per size.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Callable

import faiss
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipeline.dedupe.hashes import CROP_WINDOWS, QUERY_WINDOWS
from pipeline.dedupe.index import HashHit, IndexedHash, InMemoryHashIndex, plan_for
from pipeline.dedupe.matching import MatchRule, query_hashes
from pipeline.dedupe.sql_index import PostgresHashIndex, _band_probes, search_radii
from pipeline.dedupe.store import find_matches
from pipeline.settings import Settings
from pipeline.store import db
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade

BAND_INDEXES = ("ix_photo_hashes_b0", "ix_photo_hashes_b1", "ix_photo_hashes_b2")
PLAIN_KINDS = ("phash", "phash_mirror", "phash_crop5", "phash_crop10", "phash_crop5_mirror",
               "phash_crop10_mirror")
KINDS = PLAIN_KINDS + tuple(sorted(CROP_WINDOWS)) + tuple(
    sorted(f"{k}_mirror" for k in CROP_WINDOWS))
ROWS_PER_PHOTO = len(KINDS)
"""Index rows of a photo without a border (46: 6 plain kinds, 20 windows and their mirrors)."""


def percentiles(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3),
            "lookups_per_s": round(len(a) / (a.sum() / 1000), 1)}


Lookup = list[tuple[int, int]]
"""One stage lookup as ``(value, radius)`` pairs, in ``query_hashes`` order."""


def timed(lookups: list[Lookup], fn: Callable[[int], set[int]], expect: list[int]
          ) -> dict[str, float]:
    """Time ``fn(i)`` (the row ids found for lookup ``i``); each must contain ``expect[i]``."""
    samples = []
    for i in range(len(lookups)):
        t = time.perf_counter()
        got = fn(i)
        samples.append(time.perf_counter() - t)
        if expect[i] not in got:
            raise AssertionError(f"lookup {i}: planted neighbour {expect[i]} missing")
    return percentiles(samples)


def to_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(">u8").view(np.uint8).reshape(-1, 8)


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def flip_bits(values: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each value with ``counts[i]`` random bits flipped (a bit drawn twice flips back, so up
    to ``counts[i]``)."""
    out = values.copy()
    for k in range(int(counts.max())):
        mask = counts > k
        out[mask] ^= np.uint64(1) << rng.integers(0, 64, int(mask.sum()), dtype=np.uint64)
    return out


def flip_exact(value: int, count: int, rng: np.random.Generator) -> int:
    """``value`` with exactly ``count`` distinct random bits flipped."""
    for b in rng.choice(64, count, replace=False):
        value ^= 1 << int(b)
    return value


def stage_rule() -> MatchRule:
    d = Settings().dedupe
    return MatchRule(d.radius, d.verified_radius, d.pdq_radius, d.candidate_radius,
                     d.min_inliers, d.min_ncc, d.window_radius, d.max_verifications)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        print(json.dumps(measure(n, args, stage_rule(), rng)), flush=True)
    return 0


def synthetic(n: int, queries: int, rule: MatchRule, rng: np.random.Generator
              ) -> tuple[np.ndarray, list[dict[str, str]], list[Lookup], list[int]]:
    """``n`` stored values (photo ``i // ROWS_PER_PHOTO``, kind ``KINDS[i % ROWS_PER_PHOTO]``),
    the query photos' hashes, their lookups and the row id of each planted neighbour."""
    photos = n // ROWS_PER_PHOTO
    base = rng.integers(0, 2**64, photos, dtype=np.uint64)
    values = np.repeat(base, ROWS_PER_PHOTO)
    spread = rng.integers(4, 15, len(values))
    spread[::ROWS_PER_PHOTO] = 0
    values = flip_bits(values, spread, rng)
    step = photos // queries
    plain = rng.integers(0, 2**64, queries, dtype=np.uint64)
    query_hashes_list: list[dict[str, str]] = []
    lookups: list[Lookup] = []
    expect: list[int] = []
    for i, q in enumerate(plain):
        row = i * step * ROWS_PER_PHOTO
        values[row] = np.uint64(flip_exact(int(q), i % (rule.search_radius + 1), rng))
        expect.append(row)
        windows = flip_bits(np.repeat(q, len(QUERY_WINDOWS)),
                            rng.integers(4, 15, len(QUERY_WINDOWS)), rng)
        h = {"phash": f"{int(q):016x}", "pdq": rng.bytes(32).hex()}
        h.update({k: f"{int(v):016x}" for k, v in zip(sorted(QUERY_WINDOWS), windows,
                                                      strict=True)})
        query_hashes_list.append(h)
        lookups.append([(x.value, x.radius) for x in query_hashes(h, rule)["phash"]])
    return values, query_hashes_list, lookups, expect


def measure(n: int, args: argparse.Namespace, rule: MatchRule, rng: np.random.Generator
            ) -> dict[str, object]:
    out: dict[str, object] = {"stored": n, "rows_per_photo": ROWS_PER_PHOTO,
                              "photos": n // ROWS_PER_PHOTO, "queries": args.queries,
                              "lookup": [r for _v, r in synthetic(ROWS_PER_PHOTO * 2, 1, rule,
                                                                  np.random.default_rng(9))[2][0]],
                              "load_before": load()}
    values, hashes, lookups, expect = synthetic(n, args.queries, rule, rng)
    n = len(values)

    def linear(i: int) -> set[int]:
        found: set[int] = set()
        for q, r in lookups[i]:
            found.update(np.nonzero(np.bitwise_count(values ^ np.uint64(q)) <= r)[0].tolist())
        return found

    out["numpy_linear"] = timed(lookups[:50], linear, expect[:50])

    codes = to_bytes(values)
    qcodes = [to_bytes(np.array([q for q, _r in lk], dtype=np.uint64)) for lk in lookups]
    flat = faiss.IndexBinaryFlat(64)
    flat.add(codes)

    def faiss_range(index: faiss.IndexBinary, i: int) -> set[int]:
        found: set[int] = set()
        for k, (_q, r) in enumerate(lookups[i]):
            lims, _d, ids = index.range_search(qcodes[i][k:k + 1], r + 1)
            found.update(ids[lims[0]:lims[1]].tolist())
        return found

    out["faiss_flat"] = timed(lookups[:50], lambda i: faiss_range(flat, i), expect[:50])
    t = time.perf_counter()
    mih = faiss.IndexBinaryMultiHash(64, 3, 21)  # the PostgreSQL scheme: 3 bands
    mih.nflip = 1  # exact up to 3 * nflip + 2 bits: radius 4 and 2
    mih.add(codes)
    out["faiss_multihash_build_s"] = round(time.perf_counter() - t, 2)
    out["faiss_multihash"] = timed(lookups, lambda i: faiss_range(mih, i), expect)

    if n <= 1_000_000:
        mem = InMemoryHashIndex(rule.search_radius)
        t = time.perf_counter()
        mem.add([IndexedHash(str(i), "phash", "phash", int(v)) for i, v in enumerate(values)])
        out["memory_ingest_per_s"] = round(n / (time.perf_counter() - t))

        def memory(i: int) -> set[int]:
            return {int(h.photo_id) for q, r in lookups[i] for h in mem.search("phash", [q], r)}

        out["in_memory"] = timed(lookups, memory, expect)
        del mem

    url = os.environ.get("UNMASK_DATABASE__URL", "")
    if not args.skip_postgres and url.startswith("postgresql"):
        out["postgres"] = postgres(url, values, hashes, lookups, expect, rule)
    out["load_after"] = load()
    return out


def copy_text(start: int, values: np.ndarray) -> io.StringIO:
    """COPY rows of ``values`` (row ids ``start``...; photo ``p<row // ROWS_PER_PHOTO>``)."""
    bands = plan_for(4).split_array(values).astype(np.int64)
    signed = values.view(np.int64)
    ids = np.arange(start, start + len(values))
    photo = (ids // ROWS_PER_PHOTO).tolist()
    kinds = [KINDS[i % ROWS_PER_PHOTO] for i in ids.tolist()]
    lines = map("p{}\tphash\t{}\t{}\t{}\t{}\t{}".format,
                photo, kinds, signed.tolist(), bands[:, 0].tolist(), bands[:, 1].tolist(),
                bands[:, 2].tolist())
    return io.StringIO("\n".join(lines) + "\n")


def bulk_load(engine: sa.Engine, values: np.ndarray) -> dict[str, float]:
    """COPY the photos and their hashes without the band indexes, then build them."""
    with engine.begin() as conn:
        for name in BAND_INDEXES:
            conn.execute(sa.text(f"DROP INDEX {name}"))
    t = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        photos = len(values) // ROWS_PER_PHOTO
        cur.copy_expert(
            "COPY photos (photo_id, source, account_id, event_id, sha256, created_at, pdq) "
            "FROM STDIN",
            io.StringIO("".join(
                f"p{i}\taccount\ta{i}\te{i}\t{i:064x}\t2026-11-29 00:00:00+00\t"
                f"{hashlib.sha256(str(i).encode()).hexdigest()}\n"
                for i in range(photos))))
        chunk = 460_000
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
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE photo_hashes"))
        conn.execute(sa.text("VACUUM ANALYZE photos"))
    return {"copy_s": round(copy_s, 1), "create_indexes_s": round(time.perf_counter() - t, 1),
            "rows_per_s": round(len(values) / (copy_s + time.perf_counter() - t))}


def postgres(url: str, values: np.ndarray, hashes: list[dict[str, str]], lookups: list[Lookup],
             expect: list[int], rule: MatchRule) -> dict[str, object]:
    server = make_url(url)
    name = f"unmask_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = server.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(db_url)
    try:
        upgrade(db_url)
        index = PostgresHashIndex(engine, rule.search_radius)
        result: dict[str, object] = {"bulk_load": bulk_load(engine, values)}
        extra = np.random.default_rng(1).integers(0, 2**63, 100_004, dtype=np.uint64)
        t = time.perf_counter()
        index.copy_in([IndexedHash(f"c{i // ROWS_PER_PHOTO}", "phash",
                                   KINDS[i % ROWS_PER_PHOTO], int(v))
                       for i, v in enumerate(extra[:100_004 // ROWS_PER_PHOTO * ROWS_PER_PHOTO])])
        seconds = time.perf_counter() - t
        result["copy_ingest_hashes_per_s"] = round(len(extra) / seconds)
        result["copy_ingest_photos_per_s"] = round(len(extra) / ROWS_PER_PHOTO / seconds)
        with engine.begin() as conn:
            result["table_and_indexes_mb"] = round(conn.execute(sa.text(
                "SELECT pg_total_relation_size('photo_hashes')")).scalar_one() / 2**20)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE photo_hashes"))

        def rows(hits: list[HashHit]) -> set[int]:
            return {int(h.photo_id[1:]) * ROWS_PER_PHOTO + KINDS.index(h.kind) for h in hits
                    if h.photo_id[0] == "p"}

        planted_photo = [f"a{row // ROWS_PER_PHOTO}" for row in expect]

        with engine.connect() as conn:
            for lk in lookups[:20]:  # warm the prepared statement and the cache
                search_radii(conn, "phash", lk)
            result["index_statement"] = timed(
                lookups, lambda i: rows(search_radii(conn, "phash", lookups[i])), expect)

            def stage(i: int) -> set[int]:
                got = find_matches(conn, rule.radius, hashes[i], "e" * 64, "nobody", rule)
                found = any(m.account_id == planted_photo[i] for m in got)
                if found != (i % (rule.search_radius + 1) <= rule.radius):
                    raise AssertionError(f"lookup {i}: stage matched {found}")
                return {expect[i]}

            result["stage_find_matches"] = timed(lookups, stage, expect)
            probes = _band_probes(lookups[0])
            plan = conn.execute(sa.text(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE unmask_dedupe_search"
                "('phash', :p0, :p1, :p2)"),
                {f"p{i}": v for i, v in enumerate(probes)}).scalar_one()
            result["server_execution_ms"] = plan[0]["Execution Time"]
            result["probes_per_band"] = [len(p) for p in probes]
        result["pool_checkout_per_call"] = timed(
            lookups, lambda i: rows(index_search(index, lookups[i])), expect)
        return result
    finally:
        engine.dispose()
        drop_database(admin, name)
        admin.dispose()


def drop_database(admin: sa.Engine, name: str) -> None:
    """Drop the benchmark's database (pipeline.store.db.drop_database: retried while autovacuum
    holds it); on failure the name is printed to stderr and the result is kept."""
    try:
        db.drop_database(admin, name)
    except sa.exc.DBAPIError as error:
        print(f"could not drop database {name}: {error}", file=sys.stderr)


def index_search(index: PostgresHashIndex, lookup: Lookup) -> list[HashHit]:
    """``search_radii`` through a pool checkout per call (as ``SqlHashIndex`` does)."""
    with index.engine.connect() as conn:
        return search_radii(conn, "phash", lookup)


if __name__ == "__main__":
    raise SystemExit(main())
