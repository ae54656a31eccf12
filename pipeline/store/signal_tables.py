"""Tables of the signals stage: rolling-window counts, per-account features, clusters.

Times are stored as integer epoch seconds (``*_s`` columns): bucket arithmetic and range scans
stay cheap and identical on PostgreSQL and SQLite. Feature values of personal kinds are HMACs.
"""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.store.tables import JSONType, metadata


def _key(length: int) -> sa.types.TypeEngine[str]:
    """A key column compared byte by byte: collation "C" on PostgreSQL (migration 0015), where
    the database default (``C.UTF-8``) would make every index comparison a ``strcoll``; SQLite
    compares bytes already."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")

signal_counts = sa.Table(
    "signal_counts",
    metadata,
    sa.Column("kind", _key(24), primary_key=True),
    sa.Column("value", _key(200), primary_key=True),
    sa.Column("width_s", sa.Integer, primary_key=True),
    sa.Column("bucket_s", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)
"""Accounts per (feature value, time bucket), at the fine and the one-day widths. Only the
primary key is indexed: reads are by value, and the retention delete (by bucket) scans."""

signal_suspect_counts = sa.Table(
    "signal_suspect_counts",
    metadata,
    sa.Column("kind", _key(24), primary_key=True),
    sa.Column("value", _key(200), primary_key=True),
    sa.Column("width_s", sa.Integer, primary_key=True),
    sa.Column("bucket_s", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)
"""Suspect accounts (AI-generated face or reused photo) per (feature value, time bucket), the
same buckets as ``signal_counts``: each of a suspect account's values is counted in the bucket
of its first sight, also when the account turns suspect later. With ``signal_counts`` it gives
a value's suspect share over a window (docs/clusters.md)."""

signal_account_features = sa.Table(
    "signal_account_features",
    metadata,
    sa.Column("account_id", _key(128), primary_key=True),
    sa.Column("kind", _key(24), primary_key=True),
    sa.Column("value", _key(200), primary_key=True),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("seen_s", sa.BigInteger, nullable=False),
    sa.Index("ix_signal_account_features_value", "kind", "value", "seen_s"),
)
"""Every feature an account has shown (profile updates add to it), with when it first appeared."""

signal_accounts = sa.Table(
    "signal_accounts",
    metadata,
    sa.Column("account_id", sa.String(128), primary_key=True),
    sa.Column("created_s", sa.BigInteger, nullable=False),
    sa.Column("ai_face", sa.Boolean, nullable=False),
    sa.Column("reused_photo", sa.Boolean, nullable=False),
    sa.Column("burst", sa.Boolean, nullable=False),
    sa.Column("cluster_id", sa.String(64), index=True),
)
"""Per-account flags the cluster score counts, and the account's cluster (NULL: not linked)."""

signal_clusters = sa.Table(
    "signal_clusters",
    metadata,
    sa.Column("cluster_id", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("ai_faces", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reused_photos", sa.Integer, nullable=False, server_default="0"),
    sa.Column("burst_members", sa.Integer, nullable=False, server_default="0"),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("parts", JSONType, nullable=False),
    sa.Column("binding", JSONType, nullable=False),
    sa.Column("created_s", sa.BigInteger, nullable=False),
    sa.Column("updated_s", sa.BigInteger, nullable=False),
)
"""Current clusters (merged-away ones are deleted), with score, its parts and binding features.

``size``, ``ai_faces``, ``reused_photos`` and ``burst_members`` are running member counts, kept
up to date as accounts join, change flags or clusters merge (under the cluster's row lock)."""

signal_cluster_features = sa.Table(
    "signal_cluster_features",
    metadata,
    sa.Column("cluster_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(24), primary_key=True),
    sa.Column("value", sa.String(200), primary_key=True),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("members", sa.Integer, nullable=False),
)
"""Members of each cluster showing each feature value: the binding features without a scan of
the members (values with ``members >= 2`` bind the cluster)."""

signal_results = sa.Table(
    "signal_results",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("cluster", JSONType, nullable=False),
    sa.Column("created_s", sa.BigInteger, nullable=False, index=True),
)
"""The ClusterSignal returned for each event, read back on a redelivery."""
