"""One behaviour suite for every ``HashIndex``: in memory, SQLite, and the real PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.dedupe.bands import hamming
from pipeline.dedupe.index import HashIndex, IndexedHash, InMemoryHashIndex
from pipeline.dedupe.sql_index import PostgresHashIndex, SqlHashIndex
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade

RADIUS = 4


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HashIndex]:
    if request.param == "memory":
        yield InMemoryHashIndex(RADIUS)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.db'}"
    else:
        url = request.getfixturevalue("fresh_database_url")
    upgrade(url)
    engine = make_engine(url)
    try:
        yield PostgresHashIndex(engine, RADIUS) if request.param == "postgres" else SqlHashIndex(
            engine, RADIUS)
    finally:
        engine.dispose()


def flip(value: int, k: int, rng: random.Random) -> int:
    for p in rng.sample(range(64), k):
        value ^= 1 << p
    return value


def test_finds_every_distance_up_to_radius_and_nothing_beyond(index: HashIndex) -> None:
    rng = random.Random(7)
    base = [rng.getrandbits(64) for _ in range(20)]
    stored = [IndexedHash(f"p{i}", "phash", "phash", v) for i, v in enumerate(base)]
    near = []
    for i, v in enumerate(base):
        for d in range(0, RADIUS + 3):
            h = flip(v, d, rng)
            near.append(IndexedHash(f"n{i}_{d}", "phash", "phash_mirror", h))
    assert index.add(stored + near) == len(stored) + len(near)
    for i, v in enumerate(base):
        hits = index.search("phash", [v])
        expected = sorted(
            (h.photo_id, hamming(v, h.value)) for h in stored + near
            if hamming(v, h.value) <= RADIUS
        )
        assert sorted((h.photo_id, h.distance) for h in hits) == expected
        assert {f"n{i}_{d}" for d in range(RADIUS + 1)} <= {h.photo_id for h in hits}
        assert f"n{i}_{RADIUS + 1}" not in {h.photo_id for h in hits}
        assert all(h.query == 0 for h in hits)


def test_extreme_values_and_signed_storage(index: HashIndex) -> None:
    values = [0, (1 << 64) - 1, 0xAAAAAAAAAAAAAAAA, 0x5555555555555555 ^ (1 << 63) ^ 1]
    index.add([IndexedHash(f"x{i}", "phash", "phash", v) for i, v in enumerate(values)])
    for i, v in enumerate(values):
        hits = index.search("phash", [v ^ 0b101])
        assert [(h.photo_id, h.distance) for h in hits] == [(f"x{i}", 2)]


def test_add_is_idempotent_and_families_are_separate(index: HashIndex) -> None:
    h = IndexedHash("a", "phash", "phash", 0xDEADBEEF)
    assert index.add([h]) == 1
    assert index.add([h]) == 0
    index.add([IndexedHash("b", "face", "face", 0xDEADBEEF)])
    assert [x.photo_id for x in index.search("phash", [0xDEADBEEF])] == ["a"]
    assert [x.photo_id for x in index.search("face", [0xDEADBEEF])] == ["b"]
    assert index.count() == 2


def test_smaller_radius_multiple_queries_order_and_remove(index: HashIndex) -> None:
    index.add([
        IndexedHash("a", "phash", "phash", 0b0),
        IndexedHash("b", "phash", "phash", 0b111),
        IndexedHash("b", "phash", "phash_mirror", 0b1),
    ])
    hits = index.search("phash", [0, 0xFFFF0000FFFF0000], radius=2)
    assert [(h.query, h.photo_id, h.kind, h.distance) for h in hits] == [
        (0, "a", "phash", 0), (0, "b", "phash_mirror", 1)
    ]
    with pytest.raises(ValueError):
        index.search("phash", [0], radius=RADIUS + 1)
    assert index.remove("b") == 2
    assert [h.photo_id for h in index.search("phash", [0])] == ["a"]
    assert index.remove("b") == 0


def test_random_agreement_with_linear_scan(index: HashIndex) -> None:
    rng = random.Random(11)
    values = [rng.getrandbits(64) for _ in range(300)]
    values += [flip(values[rng.randrange(300)], rng.randint(0, 6), rng) for _ in range(300)]
    index.add([IndexedHash(f"r{i}", "phash", "phash", v) for i, v in enumerate(values)])
    queries = [flip(values[rng.randrange(len(values))], rng.randint(0, 5), rng)
               for _ in range(40)]
    hits = index.search("phash", queries)
    got = sorted((h.query, h.photo_id, h.distance) for h in hits)
    want = sorted(
        (q, f"r{i}", hamming(queries[q], v))
        for q in range(len(queries)) for i, v in enumerate(values)
        if hamming(queries[q], v) <= RADIUS
    )
    assert got == want


def test_sqlite_search_uses_the_band_indexes_not_a_family_scan(tmp_path: Path) -> None:
    from pipeline.dedupe.sql_index import _SEARCH

    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        index = SqlHashIndex(engine, RADIUS)
        rng = random.Random(3)
        index.add([IndexedHash(f"p{i}", "phash", "phash", rng.getrandbits(64)) for i in range(50)])
        statement = _SEARCH.params(family="phash", p0=[1, 2], p1=[3], p2=[4, 5])
        sql = str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        with engine.connect() as conn:
            plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
        assert "MULTI-INDEX OR" in plan, plan
        searches = [p for p in plan if p.startswith("SEARCH")]
        assert len(searches) == 3 and all("AND b" in p for p in searches), plan
    finally:
        engine.dispose()
