"""Verification of loose candidates: crops, rotations and captions of a photo pass; distinct
photos, aligned generated faces included, are refused."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.dedupe.hashes import CROP_WINDOWS, compute_hashes
from pipeline.dedupe.index import HashHit
from pipeline.dedupe.matching import (
    VERIFY_ONLY_KINDS,
    MatchRule,
    StoredPhoto,
    Verifier,
    accepted,
    indexed_hashes,
    queries,
)
from pipeline.dedupe.transforms import crop, crop_fraction, mirror, rotate, text_overlay
from pipeline.dedupe.verify import (
    THUMB_SIDE,
    Verification,
    VerifyRule,
    decode_thumb,
    encode_thumb,
    features,
    verify,
)
from pipeline.settings import Settings

SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
FACES = SHARED / "data" / "faces"
RULE = MatchRule(**Settings().dedupe.model_dump(include={
    "radius", "verified_radius", "pdq_radius", "candidate_radius", "min_inliers", "min_ncc"}))
HASH_ONLY = MatchRule(RULE.radius, RULE.verified_radius, RULE.pdq_radius, candidate_radius=-1)
ALIGNED_FAKES = [("rvf_LL7ILW5VOY.jpg", "zoya_0J27N9AJSC.jpg"),
                 ("rvf_NHTJ1PEA83.jpg", "zoya_0G1A7SBRK9.jpg"),
                 ("bhk_f465.jpg", "bhk_f894.jpg")]
"""Distinct generated faces whose eyes sit at the same place: 18-22 ORB inliers of a plausible
fit between them (measured), so the geometry alone would call them the same photo."""


def load(*parts: str) -> Image.Image:
    path = FACES.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with Image.open(path) as im:
        return im.convert("RGB")


def real_photos(n: int) -> list[Image.Image]:
    real = FACES / "real"
    if not real.is_dir():
        pytest.skip(f"{real} not present")
    names = sorted(p.name for p in real.iterdir() if p.suffix in (".jpg", ".png"))
    return [load("real", name) for name in random.Random(7).sample(names, n)]


def matched(query: Image.Image, stored: Image.Image, rule: MatchRule) -> bool:
    """What ``find_matches`` decides for one stored photo: index hits, then ``accepted``."""
    q, o = compute_hashes(query), compute_hashes(stored)
    hits = [
        HashHit("o", h.kind, (v ^ h.value).bit_count(), n)
        for n, v in enumerate(queries(q)["phash"])
        for h in indexed_hashes("o", o)
        if (v ^ h.value).bit_count() <= rule.search_radius
    ]
    photo = StoredPhoto("o", "account", "a", None, (o["pdq"], o["pdq_mirror"]), o["thumb"])
    return bool(accepted(hits, rule, q, {"o": photo}))


def test_off_centre_crops_up_to_ten_percent_are_caught() -> None:
    caught = without = 0
    photos = real_photos(8)
    for i, image in enumerate(photos):
        edited = crop(image, random.Random(i))
        caught += matched(edited, image, RULE)
        without += matched(edited, image, HASH_ONLY)
    assert caught == len(photos)
    assert without < len(photos)


def test_heavy_off_centre_crops_pass_verification() -> None:
    for i, image in enumerate(real_photos(8)):
        rng = random.Random(i)
        edited = crop_fraction(image, rng.uniform(0.06, 0.10), rng.uniform(0.06, 0.10), rng)
        q = features(decode_thumb(compute_hashes(edited)["thumb"]))
        v = verify(q, features(decode_thumb(compute_hashes(image)["thumb"])))
        assert RULE.verify_rule.passes(v) and v.ncc > 0.85, (i, v)


def test_rotation_caption_and_mirrored_crop_pass_verification() -> None:
    for i, image in enumerate(real_photos(4)):
        stored = features(decode_thumb(compute_hashes(image)["thumb"]))
        rng = random.Random(i)
        for edited, flip in ((rotate(image, rng), False), (text_overlay(image, rng), False),
                             (crop_fraction(mirror(image, rng), 0.08, 0.05, rng), True)):
            q = features(decode_thumb(compute_hashes(edited)["thumb"]), mirror=flip)
            assert RULE.verify_rule.passes(verify(q, stored)), i


def test_aligned_generated_faces_pass_the_geometry_but_not_the_correlation() -> None:
    for a, b in ALIGNED_FAKES:
        fa = features(decode_thumb(compute_hashes(load("fake", a))["thumb"]))
        fb = features(decode_thumb(compute_hashes(load("fake", b))["thumb"]))
        for v in (verify(fa, fb), verify(fb, fa)):
            assert not RULE.verify_rule.passes(v), (a, b, v)
            assert v.ncc < RULE.min_ncc


def test_distinct_photos_are_refused() -> None:
    photos = real_photos(12)
    hashes = [compute_hashes(p) for p in photos]
    feats = [features(decode_thumb(h["thumb"])) for h in hashes]
    for i in range(len(photos)):
        for j in range(len(photos)):
            if i != j:
                assert not RULE.verify_rule.passes(verify(feats[i], feats[j])), (i, j)


def test_thumb_round_trip_and_malformed_values() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 140, 3), np.uint8))
    thumb = decode_thumb(encode_thumb(image))
    assert thumb.shape == (THUMB_SIDE, THUMB_SIDE) and thumb.dtype == np.uint8
    for bad in ("not base64!", "aGVsbG8=", ""):
        with pytest.raises(ValueError):
            decode_thumb(bad)


def test_rule_passes_at_its_thresholds() -> None:
    rule = VerifyRule(min_inliers=12, min_ncc=0.80)
    assert rule.passes(Verification(12, 0.80))
    assert not rule.passes(Verification(11, 0.99))
    assert not rule.passes(Verification(200, 0.799))


def test_window_kinds_match_only_through_verification() -> None:
    image = real_photos(1)[0]
    other = load("fake", ALIGNED_FAKES[0][0])
    q = compute_hashes(image)
    assert set(CROP_WINDOWS) < VERIFY_ONLY_KINDS and "thumb" in q
    assert {h.kind for h in indexed_hashes("p", q)} >= VERIFY_ONLY_KINDS
    kind = sorted(CROP_WINDOWS)[0]
    hit = [HashHit("x", kind, 0, 0)]
    same = StoredPhoto("x", "account", "a", None, (), q["thumb"])
    distinct = StoredPhoto("x", "account", "a", None, (), compute_hashes(other)["thumb"])
    missing = StoredPhoto("x", "account", "a", None, (), None)
    broken = StoredPhoto("x", "account", "a", None, (), "!!")
    assert accepted(hit, RULE, q, {"x": same}) == hit
    for photo in (distinct, missing, broken):
        assert accepted(hit, RULE, q, {"x": photo}) == []
    assert accepted(hit, HASH_ONLY, q, {"x": same}) == []
    beyond = [HashHit("x", "phash", RULE.candidate_radius + 1, 0)]
    assert accepted(beyond, RULE, q, {"x": same}) == []
    no_thumb = {k: v for k, v in q.items() if k != "thumb"}
    assert not Verifier(no_thumb, RULE.verify_rule).passes(same, mirror=False)


def test_search_radius_covers_the_candidate_clause() -> None:
    assert RULE.candidate_radius >= RULE.verified_radius
    assert RULE.search_radius == RULE.candidate_radius
    assert HASH_ONLY.search_radius == max(RULE.radius, RULE.verified_radius)
