"""imagehash's crop-resistant (segment-based) hash: cost, crop recall and false matches.

    .venv/bin/python bench/bench_dedupe_crop_resistant.py [--originals 100] [--pool 600]

Measured beside the dedupe rule (docs/dedupe.md) to decide whether it is worth indexing.
``--pool`` images drawn from all of ../shared/data/faces give pool*(pool-1)/2 distinct pairs
(a pair counts when either hash matches the other); 100 real originals give the recall under
the transforms of pipeline/dedupe/transforms.py. Several ``matches`` settings are reported.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from pipeline.dedupe.transforms import TRANSFORMS

SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
FACES = SHARED / "data" / "faces"
SETTINGS: dict[str, dict[str, Any]] = {
    "1 segment, bit error <= 25% (default)": {"region_cutoff": 1},
    "2 segments": {"region_cutoff": 2},
    "1 segment, hamming <= 4": {"region_cutoff": 1, "hamming_cutoff": 4},
    "2 segments, hamming <= 4": {"region_cutoff": 2, "hamming_cutoff": 4},
    "3 segments, hamming <= 6": {"region_cutoff": 3, "hamming_cutoff": 6},
}


def load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=100)
    parser.add_argument("--pool", type=int, default=600)
    args = parser.parse_args()
    real = sorted(p for p in (FACES / "real").iterdir() if p.suffix in (".jpg", ".png"))
    every = sorted(p for d in ("real", "fake") for p in (FACES / d).iterdir()
                   if p.suffix in (".jpg", ".png"))
    originals = random.Random(4).sample(real, args.originals)
    pool = random.Random(5).sample(every, args.pool)
    t0 = time.perf_counter()
    hashes = [imagehash.crop_resistant_hash(load(p)) for p in pool]
    per = (time.perf_counter() - t0) / len(pool)
    segments = np.mean([len(h.segment_hashes) for h in hashes])
    print(f"crop_resistant_hash: {per * 1000:.0f} ms/image, {segments:.1f} segments", flush=True)
    false = dict.fromkeys(SETTINGS, 0)
    pairs = 0
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            pairs += 1
            for name, kw in SETTINGS.items():
                false[name] += hashes[i].matches(hashes[j], **kw) or hashes[j].matches(
                    hashes[i], **kw)
    print(f"false pairs of {pairs}: {false}", flush=True)
    for transform in ("crop", "resize", "jpeg", "rotate"):
        hits = dict.fromkeys(SETTINGS, 0)
        for path in originals:
            image = load(path)
            stored = imagehash.crop_resistant_hash(image)
            edited = TRANSFORMS[transform](image, random.Random(f"{path.name}/{transform}"))
            query = imagehash.crop_resistant_hash(edited)
            for name, kw in SETTINGS.items():
                hits[name] += query.matches(stored, **kw)
        print(transform, {k: v / len(originals) for k, v in hits.items()}, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
