"""DedupeStage and the bank on SQLite and on the real PostgreSQL: idempotency, exclusion, races."""

from __future__ import annotations

import io
import os
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine

from pipeline.dedupe.hashes import CROP_WINDOWS, compute_hashes
from pipeline.dedupe.index import IndexedHash
from pipeline.dedupe.matching import keypoints_of
from pipeline.dedupe.sql_index import add_in, search_radii
from pipeline.dedupe.stage import DedupeStage
from pipeline.dedupe.store import add_bank_photo, list_bank, read_photos, remove_bank_photo
from pipeline.dedupe.transforms import jpeg_at, mirror, resize_by
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.dedupe_tables import photo_hashes, photos
from pipeline.store.migrate import upgrade
from pipeline.types import AccountEvent, AvatarResult, Envelope

SHARED = Path(os.environ.get("UNMASK_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dedupe.db'}"
    else:
        url = request.getfixturevalue("fresh_database_url")
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((200, 200), Image.Resampling.BICUBIC)


def envelope(event_id: str, account: str, image: Image.Image | None) -> Envelope:
    event = AccountEvent("account.created.v1", event_id, datetime.now(UTC), account)
    if image is None:
        return Envelope(event=event, avatar=AvatarResult.absent())
    avatar = AvatarResult(status="scored", sha256=f"sha-{event_id}", hashes=compute_hashes(image))
    return Envelope(event=event, avatar=avatar)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_reuse_across_accounts_is_found_and_same_account_excluded(engine: Engine) -> None:
    stage = DedupeStage(engine, Settings())
    original = picture(1)
    first = stage.process([envelope("e1", "alice", original), envelope("e0", "x", None)])
    assert first[0].matches == () and first[1].matches == ()
    same_account = stage.process([envelope("e2", "alice", jpeg_at(original, 60))])
    assert same_account[0].matches == ()
    other = stage.process([envelope("e3", "bob", mirror(resize_by(original, 0.5),
                                                         random.Random(0)))])
    assert [(m.source, m.account_id, m.transform) for m in other[0].matches] == [
        ("account", "alice", "mirror")
    ]
    unrelated = stage.process([envelope("e4", "carol", picture(2))])
    assert unrelated[0].matches == ()


def test_same_event_twice_stores_one_row_and_returns_same_matches(engine: Engine) -> None:
    stage = DedupeStage(engine, Settings())
    stage.process([envelope("a1", "alice", picture(5))])
    env = envelope("b1", "bob", picture(5))
    once = stage.process([env])
    twice = stage.process([env, env])
    assert once[0].matches == twice[0].matches == twice[1].matches
    assert len(once[0].matches) == 1 and once[0].matches[0].transform == "plain"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(photos)
                            .where(photos.c.event_id == "b1")).scalar_one() == 1
        kinds = conn.execute(sa.select(photo_hashes.c.kind)
                             .where(photo_hashes.c.photo_id == "event:b1")).scalars().all()
    windows = [*CROP_WINDOWS, *(f"{k}_mirror" for k in CROP_WINDOWS)]
    assert sorted(kinds) == sorted(["phash", "phash_crop10", "phash_crop10_mirror", "phash_crop5",
                                    "phash_crop5_mirror", "phash_mirror", *windows])


def test_bank_add_list_match_remove(engine: Engine) -> None:
    stage = DedupeStage(engine, Settings())
    data = png(picture(9))
    entry = add_bank_photo(engine, 4, data, "stolen: model portfolio", "reviewer1", "report #7")
    assert add_bank_photo(engine, 4, data, "again", "reviewer2").photo_id == entry.photo_id
    listed = list_bank(engine)
    assert [(e.photo_id, e.label, e.added_by, e.origin, e.hashes) for e in listed] == [
        (entry.photo_id, "stolen: model portfolio", "reviewer1", "report #7",
         6 + 2 * len(CROP_WINDOWS))
    ]
    out = stage.process([envelope("c1", "mallory", jpeg_at(picture(9), 40))])
    assert [(m.source, m.entry_id, m.label) for m in out[0].matches] == [
        ("bank", entry.photo_id, "stolen: model portfolio")
    ]
    with pytest.raises(Exception):  # noqa: B017 - the decoder's refusal type is its own
        add_bank_photo(engine, 4, b"not an image", "x", "y")
    assert remove_bank_photo(engine, entry.photo_id)
    assert not remove_bank_photo(engine, entry.photo_id)
    assert list_bank(engine) == []
    again = stage.process([envelope("c2", "mallory2", picture(9))])
    assert [m.account_id for m in again[0].matches] == ["mallory"]


@pytest.mark.postgres
def test_concurrent_workers_lose_no_match(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    engines = [make_engine(fresh_database_url) for _ in range(2)]
    try:
        for round_ in range(10):
            image = picture(100 + round_)
            envs = [envelope(f"r{round_}w{w}", f"acct{round_}_{w}", image) for w in range(2)]
            barrier = threading.Barrier(2)
            results: dict[int, Envelope] = {}

            def work(w: int, envs: list[Envelope] = envs, barrier: threading.Barrier = barrier,
                     results: dict[int, Envelope] = results) -> None:
                stage = DedupeStage(engines[w], Settings())
                barrier.wait()
                results[w] = stage.process([envs[w]])[0]

            threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            found = sum(len(results[w].matches or ()) for w in range(2))
            assert found >= 1, f"round {round_}: neither worker saw the other"
    finally:
        for e in engines:
            e.dispose()


def test_crop_beyond_the_plain_radius_matches_only_with_a_check(engine: Engine) -> None:
    path = SHARED / "data" / "faces" / "real" / "lfw_real_1001.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    original = Image.open(path).convert("RGB")
    cropped = original.crop((8, 0, original.width - 3, original.height - 2))
    entry = add_bank_photo(engine, 4, png(original), "stolen", "reviewer1")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(photos.c.pdq, photos.c.pdq_mirror)
                              .where(photos.c.photo_id == entry.photo_id)).one()
    assert stored == (compute_hashes(original)["pdq"], compute_hashes(original)["pdq_mirror"])
    settings = Settings()
    assert (settings.dedupe.radius, settings.dedupe.verified_radius) == (2, 4)
    pdq_only = Settings(dedupe={"candidate_radius": -1, "window_radius": -1})
    out = DedupeStage(engine, pdq_only).process([envelope("k1", "mallory", cropped)])
    assert [(m.entry_id, m.distance) for m in out[0].matches] == [(entry.photo_id, 4)]
    strict = Settings(dedupe={"pdq_radius": -1, "candidate_radius": -1, "window_radius": -1})
    again = DedupeStage(engine, strict).process([envelope("k2", "trent", cropped)])
    assert [m.source for m in again[0].matches] == ["account"]


def test_off_centre_crop_is_caught_by_verification_and_distinct_faces_are_not(
        engine: Engine) -> None:
    faces = SHARED / "data" / "faces"
    paths = [faces / "real" / "lfw_real_1001.jpg", faces / "fake" / "rvf_LL7ILW5VOY.jpg",
             faces / "fake" / "zoya_0J27N9AJSC.jpg"]
    for path in paths:
        if not path.is_file():
            pytest.skip(f"{path} not present")
    original, fake_a, fake_b = (Image.open(p).convert("RGB") for p in paths)
    w, h = original.size
    cropped = original.crop((round(0.08 * w), round(0.02 * h), round(0.99 * w), round(0.93 * h)))
    stage = DedupeStage(engine, Settings())
    stage.process([envelope("c1", "alice", original), envelope("c2", "carol", fake_a)])
    with engine.connect() as conn:
        thumbs = dict(conn.execute(sa.select(photos.c.event_id, photos.c.thumb)).all())
    assert thumbs["c1"] == compute_hashes(original)["thumb"]
    out = stage.process([envelope("c3", "mallory", cropped), envelope("c4", "dave", fake_b)])
    assert [m.entry_id for m in out[0].matches] == ["account:alice"]
    assert out[1].matches == ()
    hash_only = Settings(dedupe={"candidate_radius": -1, "window_radius": -1})
    again = DedupeStage(engine, hash_only).process([envelope("c5", "trent", cropped)])
    assert "account:alice" not in [m.entry_id for m in again[0].matches]


def test_one_statement_searches_each_query_at_its_radius(engine: Engine) -> None:
    """``search_radii`` (the stage's index statement): hits up to each query's own radius and
    none beyond, for a radius-4 and a radius-2 query in one call."""
    rng = random.Random(11)
    plain, window = rng.getrandbits(64), rng.getrandbits(64)

    def flipped(value: int, k: int) -> int:
        for p in rng.sample(range(64), k):
            value ^= 1 << p
        return value

    stored = [IndexedHash(f"a{d}", "phash", "phash_win00", flipped(plain, d)) for d in range(7)]
    stored += [IndexedHash(f"b{d}", "phash", "phash", flipped(window, d)) for d in range(5)]
    with engine.begin() as conn:
        assert add_in(conn, 4, stored) == len(stored)
    with engine.connect() as conn:
        hits = search_radii(conn, "phash", [(plain, 4), (window, 2)])
    assert [(h.photo_id, h.query, h.distance) for h in hits] == [
        *((f"a{d}", 0, d) for d in range(5)), *((f"b{d}", 1, d) for d in range(3))]


def test_keypoints_are_stored_and_read_back(engine: Engine) -> None:
    image = picture(21)
    hashes = compute_hashes(image)
    DedupeStage(engine, Settings()).process([envelope("k1", "alice", image)])
    entry = add_bank_photo(engine, 2, png(picture(22)), "stolen", "reviewer1")
    with engine.connect() as conn:
        stored, exact = read_photos(conn, ["event:k1", entry.photo_id], "sha-k1")
    assert exact == ["event:k1"]
    assert stored["event:k1"].keypoints == keypoints_of(hashes) is not None
    bank_keypoints = stored[entry.photo_id].keypoints
    assert bank_keypoints == keypoints_of(compute_hashes(picture(22)))
    assert bank_keypoints is not None and len(bank_keypoints) > 1000
