"""Claim-next latency of the review queue on PostgreSQL: 100,000 pending items, 20 reviewers.

Each reviewer is its own process with its own connection pool, looping: claim the next item
(timed: the SKIP LOCKED UPDATE, the audit row and the commit, through ``ReviewService.claim``),
then close it in a second transaction (untimed, like a decision), so the queue stays near
its starting depth. The baseline is one reviewer doing the same in the same run.

    eval "$(bash ops/services.sh env)"
    .venv/bin/python bench/bench_review_claim.py --items 100000 --reviewers 20 --claims 150

Prints a Markdown table for docs/benchmarks.md. Needs UNMASK_TEST_DATABASE_URL (a role with
CREATEDB); the benchmark database is dropped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.review import queue as q  # noqa: E402
from pipeline.review.model import Reviewer  # noqa: E402
from pipeline.review.service import ReviewService  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.store.db import drop_database, make_engine  # noqa: E402
from pipeline.store.migrate import upgrade  # noqa: E402

SEED_SQL = """
INSERT INTO review_items (queue, subject_type, subject_id, open_key, priority, status, evidence,
                          decision_id, created_at, updated_at, escalation_level)
SELECT 'accounts', 'account', 'acct-' || g, 'account:acct-' || g, (g * 37) % 100, 'pending',
       jsonb_build_object('account_id', 'acct-' || g, 'reasons', jsonb_build_array('ai_face'),
                          'policy_version', 'bench'),
       'dec:ev-' || g, now() - interval '1 day' + g * interval '1 millisecond',
       now(), 0
FROM generate_series(1, :n) AS g
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def reviewer_loop(url: str, n: int, claims: int, think_s: float, barrier: object,
                  results: object) -> None:
    settings = Settings(database={"url": url})
    service = ReviewService(make_engine(url, pool_size=2), settings)
    me = Reviewer(n, f"bench{n}", "reviewer")
    with service.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    barrier.wait()  # type: ignore[attr-defined]
    rng = random.Random(n)
    if think_s:
        time.sleep(rng.uniform(0, think_s))
    out: list[float] = []
    for _ in range(claims):
        t0 = time.perf_counter()
        item = service.claim(me, "accounts")
        out.append((time.perf_counter() - t0) * 1000)
        if item is None:
            break
        with service.engine.begin() as conn:
            q.close(conn, [item], "clear", me, None)
        if think_s:
            time.sleep(rng.uniform(0.5, 1.5) * think_s)
    service.engine.dispose()
    results.put(out)  # type: ignore[attr-defined]


def run_phase(url: str, reviewers: int, claims: int, think_s: float) -> tuple[list[float], float]:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(reviewers + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=reviewer_loop,
                         args=(url, 1000 + i, claims, think_s, barrier, results))
             for i in range(reviewers)]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    latencies: list[float] = []
    for _ in procs:
        latencies.extend(results.get(timeout=600))
    wall = time.perf_counter() - started
    for p in procs:
        p.join(timeout=60)
    return latencies, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--reviewers", type=int, default=20)
    parser.add_argument("--claims", type=int, default=150, help="claims per reviewer")
    parser.add_argument("--think-ms", type=float, default=0.0)
    args = parser.parse_args()
    server_url = os.environ.get("UNMASK_TEST_DATABASE_URL")
    if not server_url:
        sys.exit('start the services first: eval "$(bash ops/services.sh env)"')
    server = make_url(server_url)
    name = f"unmask_bench_review_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        engine = make_engine(url)
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.text(SEED_SQL), {"n": args.items})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE review_items"))
        seed_s = time.perf_counter() - t0
        with engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.execute(sa.text(
                "EXPLAIN SELECT id FROM review_items WHERE open_key IS NOT NULL AND "
                "queue = 'accounts' AND escalation_level = 0 AND (status = 'pending' OR "
                "(status = 'claimed' AND lease_expires_at < now())) ORDER BY priority DESC, "
                "created_at LIMIT 1 FOR UPDATE SKIP LOCKED")))
        engine.dispose()
        think = args.think_ms / 1000
        base, base_wall = run_phase(url, 1, args.claims * 2, think)
        conc, conc_wall = run_phase(url, args.reviewers, args.claims, think)
        engine = make_engine(url)
        with engine.connect() as conn:
            dup = conn.execute(sa.text(
                "SELECT count(*) FROM (SELECT item_id FROM review_audit WHERE action = 'claim' "
                "GROUP BY item_id HAVING count(*) > 1) d")).scalar_one()
            pending = conn.execute(sa.text(
                "SELECT count(*) FROM review_items WHERE open_key IS NOT NULL")).scalar_one()
        with engine.connect() as conn:
            explain = conn.execute(sa.text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(
                q._PG_CLAIM_AUDITED.text).split(";", 1)[1]), {
                "queue": "accounts", "now": datetime.now(UTC), "owner": "explain",
                "until": datetime.now(UTC), "role": "reviewer", "until_iso": ""}
            ).scalar_one()
            conn.rollback()
        db_ms = float(explain[0]["Execution Time"])
        engine.dispose()
    finally:
        drop_database(admin, name)
        admin.dispose()

    def row(label: str, v: list[float], wall: float) -> str:
        return (f"| {label} | {len(v)} | {statistics.median(v):.2f} | {percentile(v, 95):.2f} | "
                f"{percentile(v, 99):.2f} | {max(v):.2f} | {len(v) / wall:.0f} |")

    print(f"seeded {args.items} items in {seed_s:.1f}s; cores: {os.cpu_count()}; "
          f"items still open after the run: {pending}; items claimed twice: {dup}")
    print(f"claim statement (lease + audit row) execution time in the database: {db_ms:.2f} ms")
    print("claim plan:\n" + plan)
    print()
    print("| reviewers | claims | p50 ms | p95 ms | p99 ms | max ms | claims/s |")
    print("|---|---|---|---|---|---|---|")
    print(row("1 (baseline)", base, base_wall))
    print(row(str(args.reviewers), conc, conc_wall))
    ratio = percentile(conc, 99) / percentile(base, 99)
    print(f"\np99 ratio {args.reviewers} reviewers / 1 reviewer: {ratio:.2f}x; "
          f"target p99 <= 20 ms: {'met' if percentile(conc, 99) <= 20 else 'NOT met'}")
    return 0 if dup == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
