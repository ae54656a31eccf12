"""Lag arithmetic: log end minus committed, from the earliest retained record when nothing was
committed, never negative."""

from __future__ import annotations

from pipeline.stream.monitoring import partition_lag


def test_lag_is_end_minus_committed() -> None:
    end = {("t", 0): 10, ("t", 1): 5}
    assert partition_lag(end, {("t", 0): 7, ("t", 1): 5}, {}) == {("t", 0): 3, ("t", 1): 0}


def test_without_a_commit_lag_counts_from_the_earliest_retained_record() -> None:
    end = {("t", 0): 100, ("t", 1): 8}
    assert partition_lag(end, {}, {("t", 0): 60}) == {("t", 0): 40, ("t", 1): 8}


def test_lag_never_goes_negative() -> None:
    assert partition_lag({("t", 0): 3}, {("t", 0): 9}, {}) == {("t", 0): 0}
