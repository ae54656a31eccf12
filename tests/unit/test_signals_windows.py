"""Bucket arithmetic of the rolling windows, rarity weights and the cluster score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.signals.score import ClusterStats, cluster_score, rarity_weight
from pipeline.signals.windows import (
    DAY_SECONDS,
    bucket_of,
    retention_cutoff,
    rolling_sum,
    width_for,
    window_range,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_bucket_of_floors_to_the_width() -> None:
    assert bucket_of(T0 + timedelta(minutes=9, seconds=59), 600) == bucket_of(T0, 600)
    assert bucket_of(T0 + timedelta(minutes=10), 600) == bucket_of(T0, 600) + 600


def test_long_windows_read_day_buckets() -> None:
    assert width_for(1.0, 600) == 600
    assert width_for(24.0, 600) == 600
    assert width_for(168.0, 600) == DAY_SECONDS


def test_rolling_sum_counts_buckets_inside_the_window_only() -> None:
    width = 600
    counts = {bucket_of(T0 - timedelta(minutes=m), width): 1 for m in range(0, 180, 10)}
    first, last = window_range(T0, 1.0, width)
    assert last == bucket_of(T0, width)
    assert first == bucket_of(T0 - timedelta(hours=1), width)
    assert rolling_sum(counts, T0, 1.0, width) == 7
    assert rolling_sum(counts, T0, 3.0, width) == 18
    assert rolling_sum(counts, T0 + timedelta(hours=5), 1.0, width) == 0


def test_retention_cutoff() -> None:
    assert retention_cutoff(T0, 30) == T0 - timedelta(days=30)


def test_nat_like_value_weighs_less_than_fresh_domain() -> None:
    nat = rarity_weight("ip24", 5000)
    fresh_domain = rarity_weight("link_domain", 3)
    shared_device = rarity_weight("device", 30)
    popular_device = rarity_weight("device", 20000)
    big_provider = rarity_weight("email_domain", 200000)
    assert nat < 0.1 < 1.0 < fresh_domain
    assert shared_device > 1.0 > 0.05 > popular_device
    assert big_provider < 0.02
    assert rarity_weight("device", 1) == rarity_weight("device", 20)
    assert rarity_weight("unknown-kind", 1) == 0.0


def test_cluster_score_rises_with_size_and_ai_share() -> None:
    lone = cluster_score(ClusterStats(size=1, ai_faces=1))
    family = cluster_score(ClusterStats(size=3, infra_max=3))
    honest_domain = cluster_score(ClusterStats(size=200, promoted_max=200, ai_faces=3,
                                               burst_members=60))
    campaign = cluster_score(ClusterStats(size=200, ai_faces=150, reused_photos=40,
                                          promoted_max=190, burst_members=180, infra_max=50))
    assert lone == 0.0
    assert family < 0.2
    assert honest_domain < 0.5 <= campaign <= 1.0
    assert cluster_score(ClusterStats(size=20, ai_faces=15)) > cluster_score(
        ClusterStats(size=5, ai_faces=4))
