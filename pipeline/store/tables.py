"""Foundation tables: events, idempotency marks, avatar results, decisions, DLQ, review items.

Stage-specific tables live beside this module (``dedupe_tables``, ``signal_tables``, ...) on the
same ``metadata``, so Alembic sees one schema. Types work on PostgreSQL and SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
UTCDateTime = sa.DateTime(timezone=True)

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False, index=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False, index=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("payload", JSONType, nullable=False),
)

processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("stage", sa.String(32), primary_key=True),
    sa.Column("processed_at", UTCDateTime, nullable=False),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.String(128), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("display_name", sa.String(200)),
    sa.Column("username", sa.String(100)),
    sa.Column("country", sa.String(2)),
    sa.Column("avatar_url", sa.String(2048)),
    sa.Column("avatar_sha256", sa.String(64)),
    sa.Column("avatar_score", sa.Float),
    sa.Column("last_action", sa.String(16)),
    sa.Column("last_score", sa.Float),
    sa.Column("cluster_id", sa.String(64), index=True),
)

avatar_results = sa.Table(
    "avatar_results",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_code", sa.String(64)),
    sa.Column("sha256", sa.String(64), index=True),
    sa.Column("score", sa.Float),
    sa.Column("face_found", sa.Boolean),
    sa.Column("face_box", JSONType),
    sa.Column("eyes", JSONType),
    sa.Column("model_version", sa.String(64)),
    sa.Column("hashes", JSONType),
    sa.Column("latency_ms", sa.Float),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("eye_offset", sa.Float),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("decision_id", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(200), nullable=False, index=True),
    sa.Column("account_id", sa.String(128), nullable=False, index=True),
    sa.Column("decided_at", UTCDateTime, nullable=False, index=True),
    sa.Column("event_time", UTCDateTime),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("reasons", JSONType, nullable=False),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("evidence", JSONType, nullable=False),
    sa.Column("published_at", UTCDateTime),
)

dlq_records = sa.Table(
    "dlq_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("reason_code", sa.String(64), nullable=False, index=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("source_topic", sa.String(255), nullable=False),
    sa.Column("source_partition", sa.Integer),
    sa.Column("source_offset", sa.BigInteger),
    sa.Column("record_key", sa.String(255)),
    sa.Column("event_id", sa.String(200)),
    sa.Column("failed_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("source_topic", "source_partition", "source_offset", name="uq_dlq_source"),
)

review_items = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("subject_type", sa.String(16), nullable=False),
    sa.Column("subject_id", sa.String(128), nullable=False),
    sa.Column("open_key", sa.String(200), unique=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("evidence", JSONType, nullable=False),
    sa.Column("decision_id", sa.String(200)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("claimed_at", UTCDateTime),
    sa.Column("decided_at", UTCDateTime),
    sa.Column("decided_by", sa.String(128)),
    sa.Column("outcome", sa.String(16)),
    sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_review_items_claim", "queue", "status", "priority", "created_at"),
)
sa.Index(
    "ix_review_items_open_order",
    review_items.c.queue,
    review_items.c.escalation_level,
    review_items.c.priority.desc(),
    review_items.c.created_at,
    postgresql_where=review_items.c.open_key.isnot(None),
    sqlite_where=review_items.c.open_key.isnot(None),
)
