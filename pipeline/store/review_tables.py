"""Tables of the review stage: reviewer accounts, the append-only audit log, reviewer labels.

``review_items`` itself is a foundation table (``tables.py``); the review migration adds its lease
and outcome columns. ``review_audit`` refuses UPDATE, DELETE and TRUNCATE through database
triggers created by the migration, so the log of who did what can only grow.
"""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.store.tables import JSONType, UTCDateTime, metadata

reviewers = sa.Table(
    "reviewers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(64)),
)
"""People who review: role is reviewer, lead or admin; password_hash is an Argon2id hash."""

review_audit = sa.Table(
    "review_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(64), nullable=False, index=True),
    sa.Column("actor_role", sa.String(16), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("item_id", sa.Integer, index=True),
    sa.Column("subject", sa.String(200)),
    sa.Column("detail", JSONType, nullable=False),
)
"""Every reviewer action (login, claim, release, decide, escalate, ...), append-only."""

review_labels = sa.Table(
    "review_labels",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", sa.String(16), nullable=False),
    sa.Column("account_id", sa.String(128), nullable=False, index=True),
    sa.Column("avatar_sha256", sa.String(64)),
    sa.Column("item_id", sa.Integer),
    sa.Column("decision_id", sa.String(200), nullable=False),
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("detail", JSONType, nullable=False),
)
"""Ground truth from reviewers for retraining: kind avatar (ai|real), photo (stolen|original),
account (fake|genuine); detail keeps the model's view at the time (score, hashes, matches)."""
