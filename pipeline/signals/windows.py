"""Time-bucket arithmetic of the rolling windows (pure).

Counts are kept per (feature, bucket) at two widths: the fine width
(``Settings.signals.bucket_minutes``) serves windows up to a day, a one-day width serves
longer windows, so a 7-day read sums at most 8 rows per value instead of ~1,000. A window
ending at time ``t`` covers every bucket from the one holding ``t - window`` to the one
holding ``t``, inclusive: it is rounded outwards, so it may count up to one bucket too many.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

DAY_SECONDS = 86_400
COARSE_AFTER_HOURS = 24.0
"""Windows longer than this read day buckets."""


def epoch(ts: datetime) -> int:
    """Whole seconds since the Unix epoch of an aware datetime."""
    return int(ts.timestamp())


def bucket_of(ts: datetime, width_s: int) -> int:
    """Start (epoch seconds) of the bucket of width ``width_s`` that holds ``ts``."""
    seconds = epoch(ts)
    return seconds - seconds % width_s


def width_for(window_hours: float, fine_width_s: int) -> int:
    """Bucket width read for a window: the fine width up to a day, one day beyond."""
    return DAY_SECONDS if window_hours > COARSE_AFTER_HOURS else fine_width_s


def window_range(end: datetime, window_hours: float, width_s: int) -> tuple[int, int]:
    """Inclusive (first, last) bucket starts of the window of ``window_hours`` ending at ``end``."""
    last = bucket_of(end, width_s)
    first = bucket_of(end - timedelta(hours=window_hours), width_s)
    return first, last


def rolling_sum(counts: Mapping[int, int], end: datetime, window_hours: float, width_s: int) -> int:
    """Sum of ``counts`` (bucket start -> count) over the window ending at ``end``."""
    first, last = window_range(end, window_hours, width_s)
    return sum(c for b, c in counts.items() if first <= b <= last)


def retention_cutoff(now: datetime, retention_days: float) -> datetime:
    """Buckets and stored features older than this are deleted by the retention job."""
    return now - timedelta(days=retention_days)
