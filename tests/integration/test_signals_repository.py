"""The signals repository's bulk statements on real PostgreSQL and SQLite: what the stage's
cheaper forms (plain insert first, per-value lookups) must keep from the forms they replace."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.signals import repository as repo
from pipeline.store.signal_tables import signal_account_features, signal_counts

DAY = 86_400


def _features(engine: Engine) -> set[tuple[str, str, str, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(signal_account_features)).tuples()
        return {(a, k, v, label, int(s)) for a, k, v, label, s in rows}


def test_account_features_already_stored_are_kept_and_the_rest_inserted(engine: Engine) -> None:
    with engine.begin() as conn:
        repo.insert_account_features(conn, [("a1", "device", "d1", "device:d1", 100)])
    with engine.begin() as conn:
        repo.insert_account_features(
            conn,
            [
                ("a1", "device", "d1", "device:other-label", 999),
                ("a1", "ip24", "r1", "ip24:r1", 200),
                ("a2", "device", "d1", "device:d1", 300),
            ],
        )
        repo.add_counts(conn, {("device", "d1", DAY, 0): 1})
    assert _features(engine) == {
        ("a1", "device", "d1", "device:d1", 100),
        ("a1", "ip24", "r1", "ip24:r1", 200),
        ("a2", "device", "d1", "device:d1", 300),
    }
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(signal_counts.c.count))).scalar() == 1


def test_account_features_new_rows_commit_with_the_batch(engine: Engine) -> None:
    rows = [(f"a{i}", "user_tpl", f"user_{i % 7}_#", f"user_{i % 7}_#", i) for i in range(50)]
    with engine.begin() as conn:
        repo.insert_account_features(conn, rows)
    assert _features(engine) == set(rows)


def test_read_counts_sums_the_window_per_value_and_leaves_out_values_without_counters(
    engine: Engine,
) -> None:
    increments = {
        ("device", "d1", DAY, 0): 2,
        ("device", "d1", DAY, DAY): 3,
        ("device", "d1", DAY, 5 * DAY): 7,
        ("device", "d1", 600, 600): 11,
        ("ip24", 'quote"and\\slash', DAY, DAY): 1,
        ("name_tpl", "ünïcode #", DAY, 2 * DAY): 4,
        ("name_tpl", "outside", DAY, 9 * DAY): 5,
    }
    with engine.begin() as conn:
        repo.add_counts(conn, increments)
        repo.add_counts(conn, {("device", "d1", DAY, DAY): 1})
    keys = [
        ("device", "d1"),
        ("ip24", 'quote"and\\slash'),
        ("name_tpl", "ünïcode #"),
        ("name_tpl", "outside"),
        ("name_tpl", "never seen"),
    ] + [("user_tpl", f"absent-{i}") for i in range(500)]
    with engine.connect() as conn:
        got = repo.read_counts(conn, keys, DAY, 0, 5 * DAY)
        assert repo.read_counts(conn, [], DAY, 0, 5 * DAY) == {}
    assert got == {
        ("device", "d1"): 13,
        ("ip24", 'quote"and\\slash'): 1,
        ("name_tpl", "ünïcode #"): 4,
    }


def test_holders_are_the_accounts_showing_a_value_since_a_time(engine: Engine) -> None:
    with engine.begin() as conn:
        repo.insert_account_features(
            conn,
            [
                ("a1", "device", "d1", "device:d1", 100),
                ("a2", "device", "d1", "device:d1", 200),
                ("a3", "device", "d1", "device:d1", 50),
                ("a2", "ip24", "r1", "ip24:r1", 200),
            ],
        )
    with engine.connect() as conn:
        got = repo.holders(conn, [("device", "d1"), ("ip24", "r1"), ("ip24", "none")], 100)
    assert got == {("device", "d1"): {"a1", "a2"}, ("ip24", "r1"): {"a2"}}
