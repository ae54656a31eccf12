"""Robustness of the dedupe matching rule: recall per transform, false matches over all pairs.

    .venv/bin/python bench/bench_dedupe_robustness.py [--originals 200] [--crop-repeats 3]

Every image goes through the pipeline's own code: ``compute_hashes`` (pHash, mirror, the
border-trimmed pHash, PDQ), ``indexed_hashes``/``queries`` (which kinds are stored, which are
queried) and ``MatchRule`` (``radius``, ``verified_radius``, ``pdq_radius``; defaults from
``Settings``). With ``--face`` the avatar stage's face finder (``HaarFaceLocator``) runs on every
original and every edited copy and the eye-aligned ``face`` hash is reported beside the rule.

False matches: every pair of distinct images of ../shared/data/faces (real and fake), counted
when the rule accepts the pair in either direction (either photo arriving second), from a
histogram of (pHash-family distance, PDQ distance) over all pairs, so the false-match rate of
any rule of this shape is printed too. Recall: originals are real photos from every source;
each transform of pipeline/dedupe/transforms.py is applied with a seeded generator (crop
``--crop-repeats`` times per original).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.dedupe.bands import hex_to_int
from pipeline.dedupe.hashes import compute_hashes
from pipeline.dedupe.matching import MatchRule, indexed_hashes, queries
from pipeline.dedupe.transforms import TRANSFORMS
from pipeline.settings import Settings

SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
FACES = SHARED / "data" / "faces"
STORED_SLOTS = 8
QUERY_SLOTS = 2


def load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class Hasher:
    def __init__(self, face: bool) -> None:
        self.locator = None
        if face:
            from pipeline.avatars.face import HaarFaceLocator

            self.locator = HaarFaceLocator()

    def __call__(self, image: Image.Image) -> dict[str, str]:
        if self.locator is None:
            return compute_hashes(image)
        found = self.locator.locate(image)
        return compute_hashes(image, found.face_box, list(found.eyes_px) or None)


def stored_values(h: Mapping[str, str], family: str = "phash") -> list[int]:
    return [x.value for x in indexed_hashes("p", h) if x.family == family]


def query_values(h: Mapping[str, str], family: str = "phash") -> list[int]:
    return queries(h).get(family, [])


def pdq_words(h: Mapping[str, str], kind: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(h[kind]), dtype=">u8").astype(np.uint64)


def padded(values: list[int], slots: int) -> list[int]:
    return (values + values[:1] * slots)[:slots]


def pair_histogram(table: list[dict[str, str]]) -> np.ndarray:
    """Counts of pairs i < j by (pHash-family distance, PDQ distance), either direction."""
    S = np.array([padded(stored_values(h), STORED_SLOTS) for h in table], dtype=np.uint64)
    Q = np.array([padded(query_values(h), QUERY_SLOTS) for h in table], dtype=np.uint64)
    P = np.stack([pdq_words(h, "pdq") for h in table])
    M = np.stack([pdq_words(h, "pdq_mirror") for h in table])
    n = len(table)
    hist = np.zeros((65, 257), dtype=np.int64)
    bc = np.bitwise_count
    step = 100
    for i in range(0, n, step):
        s = slice(i, min(n, i + step))
        d = np.full((s.stop - i, n), 64, dtype=np.uint8)
        for q in range(QUERY_SLOTS):
            for k in range(STORED_SLOTS):
                d = np.minimum(d, bc(Q[s, q][:, None] ^ S[None, :, k]))
                d = np.minimum(d, bc(S[s, k][:, None] ^ Q[None, :, q]))
        p = np.minimum.reduce([
            bc(P[s, None, :] ^ P[None]).sum(2, dtype=np.int32),
            bc(P[s, None, :] ^ M[None]).sum(2, dtype=np.int32),
            bc(M[s, None, :] ^ P[None]).sum(2, dtype=np.int32),
        ])
        upper = np.arange(n)[None, :] > np.arange(i, s.stop)[:, None]
        idx = d[upper].astype(np.int64) * 257 + p[upper].astype(np.int64)
        hist += np.bincount(idx, minlength=65 * 257).reshape(65, 257)
    return hist


def face_pairs(table: list[dict[str, str]]) -> np.ndarray:
    """Histogram of face-family distances over pairs where both faces were found."""
    have = [i for i, h in enumerate(table) if "face" in h]
    F = np.array([hex_to_int(table[i]["face"]) for i in have], dtype=np.uint64)
    FM = np.array([hex_to_int(table[i]["face_mirror"]) for i in have], dtype=np.uint64)
    hist = np.zeros(65, dtype=np.int64)
    for i in range(len(F)):
        d = np.minimum(np.bitwise_count(F[i] ^ F[i + 1:]), np.bitwise_count(F[i] ^ FM[i + 1:]))
        hist += np.bincount(d, minlength=65)
    return hist


def rule_pairs(hist: np.ndarray, rule: MatchRule) -> int:
    n = int(hist[: rule.radius + 1].sum())
    if rule.pdq_radius >= 0 and rule.verified_radius > rule.radius:
        n += int(hist[rule.radius + 1: rule.verified_radius + 1, : rule.pdq_radius + 1].sum())
    return n


def distances(o: Mapping[str, str], q: Mapping[str, str]) -> tuple[int, int, int | None]:
    """(pHash family, PDQ, face) distances of query ``q`` to stored ``o`` as the index sees them."""
    d = min((a ^ b).bit_count() for a in query_values(q) for b in stored_values(o))
    qp = pdq_words(q, "pdq")
    p = min(int(np.bitwise_count(qp ^ pdq_words(o, k)).sum()) for k in ("pdq", "pdq_mirror"))
    f = None
    if "face" in q and "face" in o:
        f = min((hex_to_int(q["face"]) ^ hex_to_int(o[k])).bit_count()
                for k in ("face", "face_mirror"))
    return d, p, f


def main() -> int:
    defaults = Settings().dedupe
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=200)
    parser.add_argument("--crop-repeats", type=int, default=3)
    parser.add_argument("--radius", type=int, default=defaults.radius)
    parser.add_argument("--verified-radius", type=int, default=defaults.verified_radius)
    parser.add_argument("--pdq-radius", type=int, default=defaults.pdq_radius)
    parser.add_argument("--face", action="store_true", help="run the face finder, report face")
    parser.add_argument("--face-radius", type=int, default=4)
    parser.add_argument("--pairs-limit", type=int, default=0, help="images for pairs (0: all)")
    args = parser.parse_args()
    rule = MatchRule(args.radius, args.verified_radius, args.pdq_radius)
    plain4 = MatchRule(4, 4, -1)
    hasher = Hasher(args.face)

    started = time.perf_counter()
    load_before = [round(v, 2) for v in os.getloadavg()]
    every = sorted(p for d in ("real", "fake") for p in (FACES / d).iterdir()
                   if p.suffix in (".jpg", ".png"))
    if args.pairs_limit:
        every = every[: args.pairs_limit]
    table = [hasher(load(p)) for p in every]
    hashed_s = time.perf_counter() - started
    hist = pair_histogram(table)
    n = len(every)
    pairs = n * (n - 1) // 2
    real = sorted(p for p in (FACES / "real").iterdir() if p.suffix in (".jpg", ".png"))
    originals = random.Random(4).sample(real, args.originals)

    recall: dict[str, dict[str, float]] = {}
    for name, transform in TRANSFORMS.items():
        rows = []
        for path in originals:
            image = load(path)
            o = hasher(image)
            for k in range(args.crop_repeats if name == "crop" else 1):
                seed = f"{path.name}/{name}/{k}" if k else f"{path.name}/{name}"
                rows.append(distances(o, hasher(transform(image, random.Random(seed)))))
        d = np.array([r[0] for r in rows])
        p = np.array([r[1] for r in rows])
        accepted = [rule.accepts(int(a), int(b)) for a, b in zip(d, p, strict=True)]
        entry: dict[str, Any] = {
            "queries": len(rows),
            "rule": float(np.mean(accepted)),
            "phash_r4_alone": float(np.mean(d <= 4)),
            "phash_p50": float(np.percentile(d, 50)), "phash_p95": float(np.percentile(d, 95)),
            "pdq_p50": float(np.percentile(p, 50)), "pdq_p95": float(np.percentile(p, 95)),
        }
        if args.face:
            f = [r[2] for r in rows]
            entry["face_found"] = float(np.mean([x is not None for x in f]))
            entry["face_within"] = float(np.mean([x is not None and x <= args.face_radius
                                                  for x in f]))
            entry["rule_or_face"] = float(np.mean([
                rule.accepts(int(r[0]), int(r[1])) or (r[2] is not None
                                                       and r[2] <= args.face_radius)
                for r in rows]))
        recall[name] = entry
    cum = np.cumsum(hist.sum(axis=1))
    result: dict[str, Any] = {
        "rule": {"radius": rule.radius, "verified_radius": rule.verified_radius,
                 "pdq_radius": rule.pdq_radius},
        "originals": len(originals), "images_for_pairs": n, "pairs": pairs,
        "false_pairs_rule": rule_pairs(hist, rule),
        "false_rate_rule": rule_pairs(hist, rule) / pairs,
        "false_pairs_phash_r4_alone": rule_pairs(hist, plain4),
        "false_pairs_phash_family_by_radius": {r: int(cum[r]) for r in range(0, 9, 2)},
        "false_pairs_pdq_clause_by_pdq_radius": {
            pr: rule_pairs(hist, MatchRule(rule.radius, rule.verified_radius, pr))
            for pr in range(40, 121, 8)},
        "recall": recall, "hash_all_seconds": round(hashed_s, 1),
        "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    if args.face:
        fh = np.cumsum(face_pairs(table))
        result["face_pairs_by_radius"] = {r: int(fh[r]) for r in range(0, 9, 2)}
        result["face_found_share"] = float(np.mean(["face" in h for h in table]))
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
