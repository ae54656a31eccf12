"""Hashes under each transform class, on generated pictures and a few real photos from ../shared."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.dedupe.bands import hamming, hex_to_int
from pipeline.dedupe.hashes import CROP_WINDOWS, QUERY_WINDOWS, compute_hashes, trim_border
from pipeline.dedupe.index import HashHit
from pipeline.dedupe.matching import (
    MatchRule,
    StoredPhoto,
    accepted,
    best_matches,
    indexed_hashes,
    pdq_distance,
    queries,
)
from pipeline.dedupe.transforms import TRANSFORMS
from pipeline.settings import Settings

RADIUS = 4
RULE = MatchRule(**Settings().dedupe.model_dump(include={"radius", "verified_radius",
                                                         "pdq_radius"}))
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
    """Distance the index sees in the ``phash`` family: any query kind to any stored kind."""
    stored = [h.value for h in indexed_hashes("p", compute_hashes(original)) if h.family == "phash"]
    return min(hamming(q, v) for q in queries(compute_hashes(edited))["phash"] for v in stored)


# radius each class must meet on these pictures; None: only reported by the benchmark
EXPECTED = {"resize": RADIUS, "jpeg": RADIUS, "mirror": 0, "brightness": RADIUS,
            "contrast": RADIUS, "crop": None, "rotate": None, "text": None, "border": RADIUS,
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
            if i < 4:  # smooth generated blobs: PDQ is unstable on them, the rule is for photos
                continue
            stored, query = compute_hashes(image), compute_hashes(edited)
            pdq = pdq_distance(query, [stored["pdq"], stored["pdq_mirror"]])
            assert RULE.accepts(distance(image, edited), pdq), (name, i)
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
    assert set(plain) - {"phash_trim", "phash_trim_mirror"} == {
        "phash", "phash_mirror", "pdq", "pdq_mirror", "phash_crop5", "phash_crop10",
        "phash_crop5_mirror", "phash_crop10_mirror", "thumb", *CROP_WINDOWS,
        *(f"{k}_mirror" for k in CROP_WINDOWS), *QUERY_WINDOWS}
    assert len(CROP_WINDOWS) == 24 and all(len(plain[k]) == 16 for k in CROP_WINDOWS)
    assert len(QUERY_WINDOWS) == 4 and all(len(plain[k]) == 16 for k in QUERY_WINDOWS)
    assert len(plain["phash"]) == 16 and len(plain["pdq"]) == 64
    with_face = compute_hashes(image, face_box=(60, 60, 130, 130), eyes=[(150, 110), (100, 110)])
    assert {"face", "face_mirror"} <= set(with_face) and compute_hashes(image) == plain
    cropped = image.crop((20, 0, image.width, image.height))
    shifted = compute_hashes(cropped, face_box=(40, 60, 130, 130), eyes=[(80, 110), (130, 110)])
    assert hamming(hex_to_int(with_face["face"]), hex_to_int(shifted["face"])) <= RADIUS
    assert compute_hashes(image, face_box=(0, 0, 2, 2)).keys() == plain.keys()
    with pytest.raises(ValueError):
        compute_hashes(Image.new("RGB", (0, 0)))


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (200, 30, 60)])
def test_uniform_border_is_trimmed_on_each_side(colour: tuple[int, int, int]) -> None:
    image = generated(3)
    for sides in [(12, 0, 0, 0), (0, 9, 0, 0), (0, 0, 7, 0), (0, 0, 0, 15), (10, 10, 10, 10)]:
        framed = ImageOps.expand(image, border=sides, fill=colour)
        trimmed = trim_border(framed)
        assert trimmed.size == image.size
        assert np.abs(np.asarray(trimmed, np.int16) - np.asarray(image, np.int16)).max() == 0
        assert ImageOps.mirror(trim_border(ImageOps.mirror(framed))).tobytes() == trimmed.tobytes()
        assert compute_hashes(framed)["phash_trim"] == compute_hashes(image)["phash"]


def test_no_border_no_trim_kind() -> None:
    image = generated(5)
    assert trim_border(image) is image
    assert "phash_trim" not in compute_hashes(image)
    kinds = {h.kind for h in indexed_hashes("p", compute_hashes(ImageOps.expand(image, 9)))}
    assert {"phash_trim", "phash_trim_mirror"} <= kinds
    assert not {"phash_trim", "face"} & {h.kind for h in indexed_hashes("p", compute_hashes(
        image, face_box=(40, 40, 120, 120)))}


def test_matching_values() -> None:
    h = compute_hashes(generated(1))
    windows = sorted({*CROP_WINDOWS, *(f"{k}_mirror" for k in CROP_WINDOWS)})
    assert [x.kind for x in indexed_hashes("p", h)] == sorted([
        "phash", "phash_crop10", "phash_crop10_mirror", "phash_crop5", "phash_crop5_mirror",
        "phash_mirror", *windows])
    assert queries(h) == {"phash": [hex_to_int(h["phash"])]}
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


def test_rule_at_the_radius_boundary() -> None:
    rule = MatchRule(radius=2, verified_radius=4, pdq_radius=80)
    assert rule.search_radius == 4
    assert rule.accepts(2, None) and not rule.accepts(3, None) and not rule.accepts(4, None)
    assert rule.accepts(4, 80) and rule.accepts(3, 0)
    assert not rule.accepts(4, 81) and not rule.accepts(5, 0)
    off = MatchRule(radius=4, verified_radius=4, pdq_radius=-1)
    assert off.search_radius == 4 and off.accepts(4, None) and not off.accepts(5, 0)
    assert MatchRule(radius=2, verified_radius=4, pdq_radius=-1).search_radius == 2


def flipped_hex(value: str, k: int) -> str:
    n = int(value, 16)
    for p in range(k):
        n ^= 1 << (3 * p)
    return f"{n:0{len(value)}x}"


def test_pdq_check_on_candidates_beyond_the_plain_radius() -> None:
    rule = MatchRule(radius=2, verified_radius=4, pdq_radius=80)
    query = compute_hashes(generated(2))
    pdq = query["pdq"]
    photos = {
        "near": StoredPhoto("near", "account", "a", None, (flipped_hex(pdq, 80),)),
        "far": StoredPhoto("far", "account", "b", None, (flipped_hex(pdq, 81),)),
        "mirror": StoredPhoto("mirror", "account", "c", None,
                              (flipped_hex(pdq, 120), flipped_hex(pdq, 79))),
        "old": StoredPhoto("old", "account", "d", None),
    }
    hits = [HashHit(p, "phash", d, 0) for p in photos for d in (2, 4)]
    kept = {(h.photo_id, h.distance) for h in accepted(hits, rule, query, photos)}
    assert kept == {("near", 2), ("near", 4), ("far", 2), ("mirror", 2), ("mirror", 4),
                    ("old", 2)}
    assert pdq_distance(query, photos["mirror"].pdq) == 79
    assert pdq_distance({}, photos["near"].pdq) is None
