"""Hashes under each transform class, on generated pictures and a few real photos from ../shared."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.dedupe.bands import hamming, hex_to_int
from pipeline.dedupe.hashes import compute_hashes
from pipeline.dedupe.index import HashHit
from pipeline.dedupe.matching import StoredPhoto, best_matches, indexed_hashes, queries
from pipeline.dedupe.transforms import TRANSFORMS

RADIUS = 4
SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
REAL = SHARED / "data" / "faces" / "real"


def generated(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
        (240, 240), Image.Resampling.BICUBIC)


def real_photos() -> list[Image.Image]:
    if not REAL.is_dir():
        pytest.skip(f"{REAL} not present")
    names = sorted(p for p in REAL.iterdir() if p.name.startswith(("lfw_", "zoya_")))[:6]
    return [Image.open(p).convert("RGB") for p in names]


def distance(original: Image.Image, edited: Image.Image) -> int:
    stored, query = compute_hashes(original), compute_hashes(edited)
    q = hex_to_int(query["phash"])
    return min(hamming(q, hex_to_int(stored[k])) for k in ("phash", "phash_mirror"))


# radius each class must meet on these pictures; None: only reported by the benchmark
EXPECTED = {"resize": RADIUS, "jpeg": RADIUS, "mirror": 0, "brightness": RADIUS,
            "contrast": RADIUS, "crop": None, "rotate": None, "text": None, "border": None,
            "combo": None}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_class(name: str) -> None:
    images = [generated(s) for s in range(4)] + real_photos()
    for i, image in enumerate(images):
        edited = TRANSFORMS[name](image, random.Random(i))
        assert edited.mode == "RGB" and edited.size[0] >= 8
        assert edited.tobytes() != image.tobytes()
        bound = EXPECTED[name]
        if bound is not None:
            assert distance(image, edited) <= bound, (name, i)
        else:
            assert distance(image, edited) <= 32


def test_distinct_pictures_are_far_apart() -> None:
    images = [generated(s) for s in range(10)]
    hashes = [hex_to_int(compute_hashes(im)["phash"]) for im in images]
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            assert hamming(hashes[i], hashes[j]) > RADIUS


def test_kinds_face_region_and_determinism() -> None:
    image = real_photos()[0]
    plain = compute_hashes(image)
    assert set(plain) == {"phash", "phash_mirror", "pdq", "pdq_mirror"}
    assert len(plain["phash"]) == 16 and len(plain["pdq"]) == 64
    with_face = compute_hashes(image, face_box=(60, 60, 130, 130), eyes=[(150, 110), (100, 110)])
    assert {"face", "face_mirror"} <= set(with_face) and compute_hashes(image) == plain
    cropped = image.crop((20, 0, image.width, image.height))
    shifted = compute_hashes(cropped, face_box=(40, 60, 130, 130), eyes=[(80, 110), (130, 110)])
    assert hamming(hex_to_int(with_face["face"]), hex_to_int(shifted["face"])) <= RADIUS
    assert compute_hashes(image, face_box=(0, 0, 2, 2)).keys() == plain.keys()
    with pytest.raises(ValueError):
        compute_hashes(Image.new("RGB", (0, 0)))


def test_matching_values() -> None:
    h = compute_hashes(generated(1))
    assert [x.kind for x in indexed_hashes("p", h)] == ["phash", "phash_mirror"]
    assert set(queries(h)) == {"phash"}
    photos = {
        "bank:1": StoredPhoto("bank:1", "bank", None, "stolen"),
        "event:a": StoredPhoto("event:a", "account", "alice", None),
        "event:b": StoredPhoto("event:b", "account", "alice", None),
        "event:c": StoredPhoto("event:c", "account", "me", None),
    }
    hits = [HashHit("event:a", "phash", 3, 0), HashHit("event:b", "phash_mirror", 1, 0),
            HashHit("bank:1", "phash", 4, 0), HashHit("event:c", "phash", 0, 0),
            HashHit("gone", "phash", 0, 0)]
    out = best_matches(hits, ["bank:1"], photos, exclude_account="me")
    assert [(m.source, m.entry_id, m.distance, m.transform) for m in out] == [
        ("bank", "bank:1", 0, "exact"), ("account", "account:alice", 1, "mirror")]
