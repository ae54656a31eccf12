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
part is exact: all images' stored kinds go into an ``InMemoryHashIndex`` (the same multi-index
search as the database, exact within each query's radius), each image is looked up with its
``query_hashes`` (plain kinds at the search radius, its crop windows at ``window_radius``), and
every other image it hits goes through ``accepted``; pairs it does not hit can never match.
The same run reports the rule without verification (the previous rule) and the verification's
cost. Recall: originals are real photos from every source; each
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
from pipeline.dedupe.index import HashHit, InMemoryHashIndex
from pipeline.dedupe.matching import (
    MatchRule,
    QueryHash,
    StoredPhoto,
    accepted,
    hits_against,
    indexed_hashes,
    keypoints_of,
    query_hashes,
)
from pipeline.dedupe.transforms import TRANSFORMS
from pipeline.dedupe.verify import decode_thumb, features, unpack_keypoints, verify
from pipeline.settings import Settings

SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
FACES = SHARED / "data" / "faces"


def load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def photo(i: int, h: Mapping[str, str]) -> StoredPhoto:
    """The stored photo as ``find_matches`` reads it (keypoints left out: the verification
    computes them from the thumbnail, with the same result as unpacking stored ones)."""
    return StoredPhoto(str(i), "account", str(i), None,
                       tuple(h[k] for k in ("pdq", "pdq_mirror") if k in h), h.get("thumb"))


def lookup(q: Mapping[str, str], rule: MatchRule) -> list[QueryHash]:
    return query_hashes(q, rule).get("phash", [])


def matches(q: Mapping[str, str], o: Mapping[str, str], rule: MatchRule) -> bool:
    """What ``find_matches`` decides for query ``q`` against the one stored photo ``o``."""
    qs = lookup(q, rule)
    hits = hits_against(qs, "o", [x for x in indexed_hashes("o", o) if x.family == "phash"])
    return bool(hits) and bool(accepted(hits, rule, q, {"o": photo(0, o)}, [x.kind for x in qs]))


def index_hits(index: InMemoryHashIndex, qs: list[QueryHash]) -> list[HashHit]:
    """Hits of one lookup (each query hash at its own radius) in ``index``."""
    out: list[HashHit] = []
    for radius in sorted({q.radius for q in qs}):
        positions = [n for n, q in enumerate(qs) if q.radius == radius]
        for h in index.search("phash", [qs[n].value for n in positions], radius):
            out.append(dataclasses.replace(h, query=positions[h.query]))
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
    parser.add_argument("--window-radius", type=int, default=defaults.window_radius)
    parser.add_argument("--pairs-limit", type=int, default=0, help="images for pairs (0: all)")
    parser.add_argument("--cache", type=Path, default=None, help="hashes of all images (jsonl)")
    args = parser.parse_args()
    rule = MatchRule(args.radius, args.verified_radius, args.pdq_radius, args.candidate_radius,
                     args.min_inliers, args.min_ncc, args.window_radius)
    hash_only = dataclasses.replace(rule, candidate_radius=-1, window_radius=-1)

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
    index = InMemoryHashIndex(max(rule.search_radius, rule.window_radius))
    for j, h in enumerate(table):
        index.add([x for x in indexed_hashes(str(j), h) if x.family == "phash"])
    looked_up: list[tuple[int, int, list[HashHit], list[str]]] = []
    for i, h in enumerate(table):
        qs = lookup(h, rule)
        by_photo: dict[str, list[HashHit]] = {}
        for hit in index_hits(index, qs):
            by_photo.setdefault(hit.photo_id, []).append(hit)
        looked_up.extend((i, int(j), hits, [x.kind for x in qs])
                         for j, hits in by_photo.items() if int(j) != i)
    del index
    candidates = [(i, j) for i, j, _h, _k in looked_up]
    scan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    false_rule: set[tuple[int, int]] = set()
    false_hash: set[tuple[int, int]] = set()
    scores: list[tuple[int, float]] = []
    by_radius: dict[int, set[tuple[int, int]]] = {
        r: set() for r in range(0, rule.search_radius + 1)}
    for i, j, hits, kinds in looked_up:
        key = (min(i, j), max(i, j))
        stored = {str(j): photo(j, table[j])}
        if accepted(hits, hash_only, table[i], stored, kinds):
            false_hash.add(key)
            false_rule.add(key)
            continue
        if accepted(hits, rule, table[i], stored, kinds):
            false_rule.add(key)
            d = min(h.distance for h in hits)
            for r in by_radius:
                if d <= r:
                    by_radius[r].add(key)
    verify_s = time.perf_counter() - t0
    sample = random.Random(3).sample(candidates, min(300, len(candidates)))
    packed = {j: keypoints_of(table[j]) for _i, j in sample}
    t0 = time.perf_counter()
    query_features = [features(decode_thumb(table[i]["thumb"])) for i, _j in sample]
    features_ms = 1000 * (time.perf_counter() - t0) / max(1, len(sample))
    t0 = time.perf_counter()
    for (_i, j), fq in zip(sample, query_features, strict=True):
        stored_kp = packed[j]
        assert stored_kp is not None
        v = verify(fq, unpack_keypoints(stored_kp, decode_thumb(table[j]["thumb"])))
        scores.append((v.inliers, v.ncc))
    one_verify_ms = 1000 * (time.perf_counter() - t0) / max(1, len(sample))
    per_lookup = np.bincount([i for i, _j in candidates], minlength=n)

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
        "candidate_photos_per_lookup_p50_p99_max": [
            float(np.percentile(per_lookup, 50)), float(np.percentile(per_lookup, 99)),
            int(per_lookup.max())],
        "one_verification_ms_stored_keypoints": round(one_verify_ms, 2),
        "query_features_ms": round(features_ms, 2),
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
