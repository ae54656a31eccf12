"""Robustness of the dedupe matching rule: recall per transform, false matches over all pairs.

    .venv/bin/python bench/bench_dedupe_robustness.py [--originals 200] [--crop-repeats 3]
        [--cache /tmp/dedupe_hashes.jsonl] [--pairs-limit 0]

Every image goes through the pipeline's own code: ``compute_hashes`` (pHash kinds, crop
windows, PDQ, thumbnail), ``indexed_hashes``/``queries`` (which kinds are stored, which are
queried) and ``accepted`` with ``MatchRule`` (hash clauses, then keypoint + correlation
verification of loose candidates; defaults from ``Settings``), exactly as ``find_matches``
applies them to index hits.

False matches: every pair of distinct images of ../shared/data/faces (real and fake), counted
when the rule accepts the pair in either direction (either photo arriving second). The index
part is exact: every directed pair whose pHash-family distance (any query kind against any
stored kind) is within the search radius is a candidate and goes through ``accepted``; pairs
beyond it can never match. The same run reports the rule without verification (the previous
rule) and the verification's cost. Recall: originals are real photos from every source; each
transform of pipeline/dedupe/transforms.py is applied with a seeded generator (crop
``--crop-repeats`` times per original). ``--cache`` keeps the hashes of all images between runs
(recomputed when the file is missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.dedupe.hashes import compute_hashes
from pipeline.dedupe.index import HashHit
from pipeline.dedupe.matching import (
    MatchRule,
    StoredPhoto,
    accepted,
    indexed_hashes,
    queries,
)
from pipeline.dedupe.transforms import TRANSFORMS
from pipeline.dedupe.verify import decode_thumb, features, verify
from pipeline.settings import Settings

SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
FACES = SHARED / "data" / "faces"
QUERY_SLOTS = 2


def load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def stored_kinds(h: Mapping[str, str]) -> list[tuple[str, int]]:
    return [(x.kind, x.value) for x in indexed_hashes("p", h) if x.family == "phash"]


def query_values(h: Mapping[str, str]) -> list[int]:
    return queries(h).get("phash", [])


def photo(i: int, h: Mapping[str, str]) -> StoredPhoto:
    return StoredPhoto(str(i), "account", str(i), None,
                       tuple(h[k] for k in ("pdq", "pdq_mirror") if k in h), h.get("thumb"))


def hits_for(q: Mapping[str, str], o: Mapping[str, str], photo_id: str, radius: int
             ) -> list[HashHit]:
    """The index hits a query ``q`` gets on stored photo ``o`` at ``radius``."""
    out = []
    for n, a in enumerate(query_values(q)):
        for kind, b in stored_kinds(o):
            d = (a ^ b).bit_count()
            if d <= radius:
                out.append(HashHit(photo_id, kind, d, n))
    return out


def matches(q: Mapping[str, str], o: Mapping[str, str], rule: MatchRule) -> bool:
    hits = hits_for(q, o, "o", rule.search_radius)
    return bool(hits) and bool(accepted(hits, rule, q, {"o": photo(0, o)}))


def candidate_pairs(table: list[dict[str, str]], radius: int) -> list[tuple[int, int]]:
    """Directed (query, stored) pairs of distinct images with a pHash-family hit in ``radius``."""
    width = max(len(stored_kinds(h)) for h in table)
    S = np.array([([v for _k, v in stored_kinds(h)] * width)[:width] for h in table],
                 dtype=np.uint64)
    Q = np.array([(query_values(h) * QUERY_SLOTS)[:QUERY_SLOTS] for h in table], dtype=np.uint64)
    n = len(table)
    out: list[tuple[int, int]] = []
    step = 200
    for i in range(0, n, step):
        s = slice(i, min(n, i + step))
        d = np.full((s.stop - i, n), 64, dtype=np.uint8)
        for q in range(QUERY_SLOTS):
            for k in range(width):
                d = np.minimum(d, np.bitwise_count(Q[s, q][:, None] ^ S[None, :, k]))
        a, b = np.nonzero(d <= radius)
        out.extend((int(x) + i, int(y)) for x, y in zip(a, b, strict=True) if x + i != y)
    return out


def hash_all(paths: list[Path], cache: Path | None) -> list[dict[str, str]]:
    if cache is not None and cache.exists():
        rows = [json.loads(line) for line in cache.read_text().splitlines()]
        if [r["path"] for r in rows] == [str(p) for p in paths]:
            return [r["hashes"] for r in rows]
    table = [compute_hashes(load(p)) for p in paths]
    if cache is not None:
        cache.write_text("".join(json.dumps({"path": str(p), "hashes": h}) + "\n"
                                 for p, h in zip(paths, table, strict=True)))
    return table


def main() -> int:
    defaults = Settings().dedupe
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=200)
    parser.add_argument("--crop-repeats", type=int, default=3)
    parser.add_argument("--radius", type=int, default=defaults.radius)
    parser.add_argument("--verified-radius", type=int, default=defaults.verified_radius)
    parser.add_argument("--pdq-radius", type=int, default=defaults.pdq_radius)
    parser.add_argument("--candidate-radius", type=int, default=defaults.candidate_radius)
    parser.add_argument("--min-inliers", type=int, default=defaults.min_inliers)
    parser.add_argument("--min-ncc", type=float, default=defaults.min_ncc)
    parser.add_argument("--pairs-limit", type=int, default=0, help="images for pairs (0: all)")
    parser.add_argument("--cache", type=Path, default=None, help="hashes of all images (jsonl)")
    args = parser.parse_args()
    rule = MatchRule(args.radius, args.verified_radius, args.pdq_radius, args.candidate_radius,
                     args.min_inliers, args.min_ncc)
    hash_only = dataclasses.replace(rule, candidate_radius=-1)

    started = time.perf_counter()
    load_before = [round(v, 2) for v in os.getloadavg()]
    every = sorted(p for d in ("real", "fake") for p in (FACES / d).iterdir()
                   if p.suffix in (".jpg", ".png"))
    if args.pairs_limit:
        every = every[: args.pairs_limit]
    t0 = time.perf_counter()
    table = hash_all(every, args.cache)
    hashed_s = time.perf_counter() - t0
    n = len(every)
    pairs = n * (n - 1) // 2

    t0 = time.perf_counter()
    candidates = candidate_pairs(table, rule.search_radius)
    scan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    false_rule: set[tuple[int, int]] = set()
    false_hash: set[tuple[int, int]] = set()
    scores: list[tuple[int, float]] = []
    by_radius: dict[int, set[tuple[int, int]]] = {
        r: set() for r in range(4, rule.search_radius + 1)}
    for i, j in candidates:
        key = (min(i, j), max(i, j))
        hits = hits_for(table[i], table[j], str(j), rule.search_radius)
        stored = {str(j): photo(j, table[j])}
        if accepted(hits, hash_only, table[i], stored):
            false_hash.add(key)
            false_rule.add(key)
            continue
        if accepted(hits, rule, table[i], stored):
            false_rule.add(key)
            d = min(h.distance for h in hits)
            for r in by_radius:
                if d <= r:
                    by_radius[r].add(key)
    verify_s = time.perf_counter() - t0
    sample = random.Random(3).sample(candidates, min(300, len(candidates)))
    t0 = time.perf_counter()
    for i, j in sample:
        v = verify(features(decode_thumb(table[i]["thumb"])),
                   features(decode_thumb(table[j]["thumb"])))
        scores.append((v.inliers, v.ncc))
    one_verify_ms = 1000 * (time.perf_counter() - t0) / max(1, len(sample))

    real = sorted(p for p in (FACES / "real").iterdir() if p.suffix in (".jpg", ".png"))
    originals = random.Random(4).sample(real, args.originals)
    recall: dict[str, dict[str, float]] = {}
    for name, transform in TRANSFORMS.items():
        got_rule, got_hash = [], []
        for path in originals:
            image = load(path)
            o = compute_hashes(image)
            for k in range(args.crop_repeats if name == "crop" else 1):
                seed = f"{path.name}/{name}/{k}" if k else f"{path.name}/{name}"
                q = compute_hashes(transform(image, random.Random(seed)))
                got_rule.append(matches(q, o, rule))
                got_hash.append(matches(q, o, hash_only))
        recall[name] = {"queries": len(got_rule), "rule": float(np.mean(got_rule)),
                        "without_verification": float(np.mean(got_hash))}
    ncc = np.array([s[1] for s in scores]) if scores else np.zeros(1)
    result: dict[str, Any] = {
        "rule": dataclasses.asdict(rule), "search_radius": rule.search_radius,
        "originals": len(originals), "images_for_pairs": n, "pairs": pairs,
        "false_pairs_rule": len(false_rule), "false_rate_rule": len(false_rule) / pairs,
        "false_pairs_without_verification": len(false_hash),
        "false_pairs_verified_by_candidate_radius": {r: len(v) for r, v in by_radius.items()},
        "false_pairs_list": sorted(false_rule - false_hash)[:20],
        "candidates_directed": len(candidates),
        "candidate_rate_directed": len(candidates) / (2 * pairs),
        "candidates_per_lookup_at_1e7_photos": len(candidates) / (2 * pairs) * 1e7,
        "one_verification_ms": round(one_verify_ms, 2),
        "distinct_candidates_ncc_p99_max": [float(np.percentile(ncc, 99)), float(ncc.max())],
        "recall": recall,
        "hash_all_seconds": round(hashed_s, 1), "candidate_scan_seconds": round(scan_s, 1),
        "candidate_check_seconds": round(verify_s, 1),
        "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
