"""Robustness of the dedupe hashes: recall per transform and false matches over all distinct pairs.

    .venv/bin/python bench/bench_dedupe_robustness.py [--originals 300] [--radius 4]

Originals are real photos from ../shared/data/faces/real (every source); every transform of
pipeline/dedupe/transforms.py is applied once per original with a seeded generator. A query
matches when its plain hash is within the radius of the original's plain or mirror hash (the
rule the index applies). False matches are counted over every pair of distinct images of the
whole faces set (real and fake), with the same rule, vectorised (numpy popcount on uint64).
PDQ (256 bits) is measured beside pHash at the radius giving the same false-match budget.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps

from pipeline.dedupe.hashes import pdq_hex
from pipeline.dedupe.transforms import TRANSFORMS

SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
FACES = SHARED / "data" / "faces"


def load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        image = im.convert("RGB")
    if max(image.size) > 512:
        image.thumbnail((512, 512))
    return image


def ph(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


def pdq_words(image: Image.Image) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(pdq_hex(image)), dtype=">u8").astype(np.uint64)


def hashes(image: Image.Image) -> tuple[int, int, np.ndarray, np.ndarray]:
    mirror = ImageOps.mirror(image)
    return ph(image), ph(mirror), pdq_words(image), pdq_words(mirror)


def pair_histogram(p: np.ndarray, m: np.ndarray, words: int) -> np.ndarray:
    """Histogram of min(d(plain_i, plain_j), d(plain_i, mirror_j)) over pairs i < j."""
    n = len(p)
    bits = 64 * words
    hist = np.zeros(bits + 1, dtype=np.int64)
    step = max(1, 4_000_000 // (n * words))
    cols = np.arange(n)
    for i in range(0, n, step):
        a = p[i:i + step]
        dp = np.bitwise_count(a[:, None, :] ^ p[None, :, :]).sum(axis=2, dtype=np.int32)
        dm = np.bitwise_count(a[:, None, :] ^ m[None, :, :]).sum(axis=2, dtype=np.int32)
        d = np.minimum(dp, dm)
        rows = np.arange(i, i + len(a))
        hist += np.bincount(d[cols[None, :] > rows[:, None]], minlength=bits + 1)
    return hist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=300)
    parser.add_argument("--radius", type=int, default=4)
    parser.add_argument("--pairs-limit", type=int, default=0, help="images for pairs (0: all)")
    args = parser.parse_args()

    started = time.perf_counter()
    real = sorted((FACES / "real").iterdir())
    real = [p for p in real if p.suffix in (".jpg", ".png")]
    originals = random.Random(4).sample(real, args.originals)

    # pairs first: the radius for PDQ is chosen at the same false-match budget as pHash's
    every = sorted(p for d in ("real", "fake") for p in (FACES / d).iterdir()
                   if p.suffix in (".jpg", ".png"))
    if args.pairs_limit:
        every = every[: args.pairs_limit]
    table = [hashes(load(p)) for p in every]
    P = np.array([[t[0]] for t in table], dtype=np.uint64)
    M = np.array([[t[1]] for t in table], dtype=np.uint64)
    Q = np.stack([t[2] for t in table])
    QM = np.stack([t[3] for t in table])
    n = len(every)
    pairs = n * (n - 1) // 2
    hist_ph = pair_histogram(P, M, 1)
    hist_pdq = pair_histogram(Q, QM, 4)
    cum_ph = np.cumsum(hist_ph)
    cum_pdq = np.cumsum(hist_pdq)
    fp_ph = int(cum_ph[args.radius])
    budget = max(fp_ph, 1)
    pdq_radius = int(np.searchsorted(cum_pdq, budget, side="right")) - 1
    pdq_radius = max(pdq_radius, 0)
    hashed_s = time.perf_counter() - started

    recall: dict[str, dict[str, float]] = {}
    for name, transform in TRANSFORMS.items():
        hits_ph = hits_pdq = hits_either = 0
        d_ph: list[int] = []
        for path in originals:
            image = load(path)
            o = hashes(image)
            q = hashes(transform(image, random.Random(f"{path.name}/{name}")))
            dp = min((q[0] ^ o[0]).bit_count(), (q[0] ^ o[1]).bit_count())
            dq = min(int(np.bitwise_count(q[2] ^ o[2]).sum()),
                     int(np.bitwise_count(q[2] ^ o[3]).sum()))
            d_ph.append(dp)
            hits_ph += dp <= args.radius
            hits_pdq += dq <= pdq_radius
            hits_either += dp <= args.radius or dq <= pdq_radius
        k = len(originals)
        recall[name] = {
            "phash": hits_ph / k, "pdq": hits_pdq / k, "phash_or_pdq": hits_either / k,
            "phash_p50": float(np.percentile(d_ph, 50)),
            "phash_p95": float(np.percentile(d_ph, 95)),
        }
    result = {
        "originals": len(originals), "radius": args.radius, "pdq_radius": pdq_radius,
        "images_for_pairs": n, "pairs": pairs,
        "false_pairs_phash": fp_ph, "false_rate_phash": fp_ph / pairs,
        "false_pairs_pdq": int(cum_pdq[pdq_radius]),
        "false_rate_pdq": int(cum_pdq[pdq_radius]) / pairs,
        "false_rate_phash_by_radius": {r: int(cum_ph[r]) / pairs for r in range(0, 13, 2)},
        "recall": recall, "hash_all_seconds": round(hashed_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
