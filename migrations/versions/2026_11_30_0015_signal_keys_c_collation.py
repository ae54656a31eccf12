"""Signals: byte-order ("C") collation on the counter and account-feature keys; drop
ix_signal_counts_bucket.

The keys are HMAC hex digests, templates and domains that are only ever compared for equality
or sorted in code-point order; the database's ``C.UTF-8`` collation made every B-tree
comparison a ``strcoll`` call, where "C" compares bytes (the same order for UTF-8 text).
ix_signal_counts_bucket (width_s, bucket_s) was maintained by every counter upsert for the
retention delete alone (a daily job that can scan), and it was a trap for the per-value count
read: with a bucket range beyond the column's statistics the planner took it for the selective
index and scanned a whole width's buckets per value (docs/benchmarks.md, signals, fourth pass).
SQLite compares bytes already; only the index changes there.

Revision ID: 0015_signal_keys_c
Revises: 0014_dedupe_keypoints
Create Date: 2026-11-30 00:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_signal_keys_c"
down_revision: str | Sequence[str] | None = "0014_dedupe_keypoints"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = (
    ("signal_counts", "kind", 24),
    ("signal_counts", "value", 200),
    ("signal_suspect_counts", "kind", 24),
    ("signal_suspect_counts", "value", 200),
    ("signal_account_features", "account_id", 128),
    ("signal_account_features", "kind", 24),
    ("signal_account_features", "value", 200),
)


def _collate(collation: str) -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, column, length in _KEYS:
        op.alter_column(
            table,
            column,
            type_=sa.String(length, collation=collation),
            existing_type=sa.String(length),
            existing_nullable=False,
        )


def upgrade() -> None:
    with op.batch_alter_table("signal_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_signal_counts_bucket")
    _collate("C")


def downgrade() -> None:
    _collate("default")
    with op.batch_alter_table("signal_counts", schema=None) as batch_op:
        batch_op.create_index("ix_signal_counts_bucket", ["width_s", "bucket_s"], unique=False)
