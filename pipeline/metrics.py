"""Every Prometheus metric of unmask, declared once, with what it measures.

Names follow ``unmask_<noun>_<verb>_<unit>``; counters end in ``_total``; label values are
bounded (topics, stages, reason codes, actions: never ids). Stages import the metric they
update from here; nothing else declares metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))

# Stream -------------------------------------------------------------------------------------
EVENTS_CONSUMED = Counter(
    "unmask_events_consumed_total", "Records read from a topic by the pipeline.", ["topic"]
)
EVENTS_PRODUCED = Counter(
    "unmask_events_produced_total", "Records written to a topic by the pipeline.", ["topic"]
)
EVENTS_FAILED = Counter(
    "unmask_events_failed_total", "Records that could not be processed, by reason code.",
    ["topic", "code"],
)
DLQ_RECORDS = Counter(
    "unmask_dlq_records_total", "Records sent to the dead-letter topic, by reason code.", ["code"]
)
STAGE_SECONDS = Histogram(
    "unmask_stage_duration_seconds", "Wall time of one stage call on one micro-batch.",
    ["stage"], buckets=LATENCY_BUCKETS,
)
STAGE_RETRIES = Counter(
    "unmask_stage_retries_total", "Batches retried after a dependency failure.", ["stage"]
)
EVENT_TO_DECISION_SECONDS = Histogram(
    "unmask_event_to_decision_seconds", "From the event's occurred_at to its decision.",
    buckets=LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "unmask_consumer_lag_messages", "Records behind the log end, per topic partition.",
    ["topic", "partition"],
)

# Decisions ----------------------------------------------------------------------------------
DECISIONS = Counter(
    "unmask_decisions_made_total", "Decisions made, by action and source.", ["action", "source"]
)
POLICY_INFO = Info("unmask_policy", "Version of the decision policy in use.")

# Avatars ------------------------------------------------------------------------------------
AVATAR_SCORE = Histogram(
    "unmask_avatar_score_ratio", "AI-generated probability of scored avatars.",
    buckets=SCORE_BUCKETS,
)
AVATAR_ERRORS = Counter(
    "unmask_avatar_errors_total", "Avatars refused, by error code.", ["code"]
)
AVATAR_STEP_SECONDS = Histogram(
    "unmask_avatar_step_duration_seconds",
    "Time per avatar step (fetch, decode, face, score, hash).", ["step"], buckets=LATENCY_BUCKETS,
)
MODEL_INFO = Info("unmask_model", "Version of the AI-face detector in use.")

# Dedupe -------------------------------------------------------------------------------------
PHOTO_MATCHES = Counter(
    "unmask_photo_matches_total", "Near-duplicate matches found, by source (bank, account).",
    ["source"],
)

# Signals ------------------------------------------------------------------------------------
CLUSTER_SCORE = Histogram(
    "unmask_cluster_score_ratio", "Score of the cluster an account joined.", buckets=SCORE_BUCKETS
)

# Health -------------------------------------------------------------------------------------
DEPENDENCY_UP = Gauge(
    "unmask_dependency_up", "1 when the dependency answered its last check, else 0.", ["dependency"]
)

# Review queue -------------------------------------------------------------------------------
REVIEW_QUEUE_METRICS = ("unmask_review_queue_items", "unmask_review_queue_oldest_age_seconds")
"""Names exported by :class:`ReviewQueueCollector` (read from the database on each scrape)."""


class ReviewQueueCollector:
    """Pending review items per queue and the age of the oldest one, read on each scrape.

    Reading at scrape time keeps every process (worker or review app) exporting the true depth
    rather than its own view. When the database does not answer, the two families are left out
    of that scrape (``unmask_dependency_up`` reports the outage).
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._seen: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        from datetime import UTC, datetime

        import sqlalchemy as sa
        from sqlalchemy import exc as sa_exc

        from pipeline.store.tables import review_items as t

        query = (sa.select(t.c.queue, sa.func.count(), sa.func.min(t.c.created_at))
                 .where(t.c.status == "pending").group_by(t.c.queue))
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
        except sa_exc.SQLAlchemyError as exc:
            logging.getLogger(__name__).warning("review queue metrics unavailable: %s",
                                                str(exc).splitlines()[0][:200])
            return
        now = datetime.now(UTC)
        depth = GaugeMetricFamily(REVIEW_QUEUE_METRICS[0], "Review items pending, per queue.",
                                  labels=["queue"])
        oldest = GaugeMetricFamily(REVIEW_QUEUE_METRICS[1],
                                   "Age of the oldest pending review item, per queue.",
                                   labels=["queue"])
        pending = {queue: (count, first) for queue, count, first in rows}
        self._seen |= set(pending)
        for queue in sorted(self._seen):
            count, first = pending.get(queue, (0, None))
            depth.add_metric([queue], count)
            if first is not None and first.tzinfo is None:
                first = first.replace(tzinfo=UTC)
            oldest.add_metric([queue], (now - first).total_seconds() if first else 0.0)
        yield depth
        yield oldest

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(REVIEW_QUEUE_METRICS[0], "", labels=["queue"]),
                GaugeMetricFamily(REVIEW_QUEUE_METRICS[1], "", labels=["queue"])]


def register_review_queue_collector(engine: Any,
                                    registry: CollectorRegistry = REGISTRY) -> ReviewQueueCollector:
    """Export the review queue gauges from ``engine``'s database (once per process)."""
    collector = ReviewQueueCollector(engine)
    registry.register(collector)
    return collector
