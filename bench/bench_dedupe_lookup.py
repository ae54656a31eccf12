"""Cost of one dedupe lookup on real photos: the index search plus verification of candidates.

    eval "$(ops/services.sh env)"
    .venv/bin/python bench/bench_dedupe_lookup.py [--stored 2000] [--queries 200] [--sqlite-only]

Stores ``--stored`` photos of ../shared/data/faces (real and fake, every kind
``compute_hashes`` gives, through ``store_account_photo``) in a fresh SQLite file and in a fresh
database on the PostgreSQL server of UNMASK_DATABASE__URL, then times ``find_matches`` for
``--queries`` queries (half of them crops of stored photos, half of them photos not stored;
tables analysed first, as autovacuum would have them),
with the configured rule and, in the same run, with the rule without verification
(``candidate_radius`` and ``window_radius`` -1: the hash clauses only) as the baseline. The
query's packed keypoints are passed in as the stage does (it has just stored them). Prints one
JSON object: p50/p99 milliseconds per lookup and per dialect, the index statement's share,
recall on the cropped half, and how many candidate photos were verified per lookup.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

import pipeline.dedupe.matching as matching
from pipeline.dedupe.hashes import compute_hashes
from pipeline.dedupe.matching import MatchRule, keypoints_of, query_hashes
from pipeline.dedupe.sql_index import search_radii
from pipeline.dedupe.stage import match_rule
from pipeline.dedupe.store import find_matches, store_account_photo
from pipeline.dedupe.transforms import crop
from pipeline.settings import Settings
from pipeline.store.db import drop_database, make_engine
from pipeline.store.migrate import upgrade

SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
FACES = SHARED / "data" / "faces"


def load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def fresh_postgres(url: str) -> tuple[str, Engine]:
    admin = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    name = f"unmask_lookup_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, admin


def drop_postgres(url: str, name: str) -> None:
    admin = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        drop_database(admin, name)
    finally:
        admin.dispose()


def run(engine: Engine, radius: int, stored: list[dict[str, str]],
        queries: list[tuple[dict[str, str], str | None]], rules: dict[str, MatchRule]
        ) -> dict[str, Any]:
    with engine.begin() as conn:
        for i, h in enumerate(stored):
            store_account_photo(conn, radius, f"acc{i}", f"ev{i}", None, h)
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    out: dict[str, Any] = {}
    keypoints = [keypoints_of(h) for h, _e in queries]
    for name, rule in rules.items():
        times, search, found, verified = [], [], [], []
        with engine.connect() as conn:
            for (h, expected), kp in zip(queries, keypoints, strict=True):
                verifier = matching.Verifier(h, rule.verify_rule, kp)
                t0 = time.perf_counter()
                got = find_matches(conn, radius, h, None, exclude_account="q", rule=rule,
                                   keypoints=kp, verifier=verifier)
                times.append(1000 * (time.perf_counter() - t0))
                verified.append(verifier.count)
                if expected is not None:
                    found.append(any(m.account_id == expected for m in got))
                t0 = time.perf_counter()
                for family, values in query_hashes(h, rule).items():
                    search_radii(conn, family, [(q.value, q.radius) for q in values])
                search.append(1000 * (time.perf_counter() - t0))
        out[name] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                     "p99_ms": round(float(np.percentile(times, 99)), 2),
                     "index_statement_p50_p99_ms": [round(float(np.percentile(search, 50)), 2),
                                                    round(float(np.percentile(search, 99)), 2)],
                     "crop_recall": float(np.mean(found)),
                     "verifications_per_lookup": float(np.mean(verified)),
                     "verifications_max": int(max(verified))}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    d = settings.dedupe
    rule = match_rule(settings)
    rules = {"rule": rule, "without_verification": dataclasses.replace(
        rule, candidate_radius=-1, window_radius=-1)}
    every = sorted(p for s in ("real", "fake") for p in (FACES / s).iterdir()
                   if p.suffix in (".jpg", ".png"))
    rng = random.Random(5)
    picked = rng.sample(every, args.stored + args.queries // 2)
    started = time.perf_counter()
    stored = [compute_hashes(load(p)) for p in picked[: args.stored]]
    queries: list[tuple[dict[str, str], str | None]] = []
    for k in range(args.queries // 2):
        i = rng.randrange(args.stored)
        queries.append((compute_hashes(crop(load(picked[i]), random.Random(k))), f"acc{i}"))
    queries += [(compute_hashes(load(p)), None) for p in picked[args.stored:]]
    result: dict[str, Any] = {"stored": args.stored, "queries": len(queries),
                              "hash_seconds": round(time.perf_counter() - started, 1),
                              "load_before": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        eng = make_engine(f"sqlite:///{tmp}/lookup.db")
        upgrade(f"sqlite:///{tmp}/lookup.db")
        result["sqlite"] = run(eng, d.radius, stored, queries, rules)
        eng.dispose()
    if not args.sqlite_only:
        url = settings.database.url
        name, _ = fresh_postgres(url)
        db_url = make_url(url).set(database=name).render_as_string(hide_password=False)
        try:
            upgrade(db_url)
            eng = make_engine(db_url)
            result["postgresql"] = run(eng, d.radius, stored, queries, rules)
            eng.dispose()
        finally:
            drop_postgres(url, name)
    result["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
