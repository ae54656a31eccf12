"""Every Prometheus metric of unmask, declared once, with what it measures.

Names follow ``unmask_<noun>_<verb>_<unit>``; counters end in ``_total``; label values are
bounded (topics, stages, reason codes, actions: never ids). Stages import the metric they
update from here; nothing else declares metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

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
STAGE_BATCH_MESSAGES = Histogram(
    "unmask_stage_batch_messages", "Records in one micro-batch a stage agent took from its topic.",
    ["stage"], buckets=(1, 10, 50, 100, 200, 500, 1000, 2000, 5000),
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
RECLUSTER_SECONDS = Histogram(
    "unmask_recluster_duration_seconds", "Duration of one reconcile (re-clustering) run.",
    buckets=LATENCY_BUCKETS + (120, 300),
)
RECLUSTER_CLUSTERS_CHANGED = Counter(
    "unmask_recluster_clusters_changed_total",
    "Clusters a reconcile created or dissolved (member sets not present before / after).",
)
RECLUSTER_DECISIONS_REVISED = Counter(
    "unmask_recluster_decisions_revised_total",
    "Revised decisions a reconcile made (latest decision changed under the reconciled cluster).",
)

# Review -------------------------------------------------------------------------------------
REVIEW_QUEUE_DEPTH = Gauge(
    "unmask_review_queue_depth_items", "Claimable review items per queue (refreshed on scrape).",
    ["queue"],
)
REVIEW_OLDEST_AGE = Gauge(
    "unmask_review_oldest_age_seconds", "Age of the oldest claimable item per queue.", ["queue"]
)
REVIEW_TIME_TO_DECISION = Histogram(
    "unmask_review_time_to_decision_seconds", "From a review item's creation to its decision.",
    ["queue"], buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
)
REVIEW_DECISIONS = Counter(
    "unmask_review_decisions_made_total", "Reviewer outcomes (disable, clear, escalate) by role.",
    ["outcome", "role"],
)
REVIEW_CLAIM_SECONDS = Histogram(
    "unmask_review_claim_duration_seconds", "Time to claim the next review item.",
    buckets=LATENCY_BUCKETS,
)
REVIEW_DECISIONS_PUBLISHED = Counter(
    "unmask_review_decisions_published_total", "Reviewer decisions sent from the outbox to Kafka."
)
REVIEW_OUTBOX_FAILURES = Counter(
    "unmask_review_outbox_failures_total", "Outbox rounds that failed (Kafka or database down)."
)

# Health -------------------------------------------------------------------------------------
DEPENDENCY_UP = Gauge(
    "unmask_dependency_up", "1 when the dependency answered its last check, else 0.", ["dependency"]
)
