"""Signals: suspect accounts (AI face / reused photo) per feature value and time bucket.

Revision ID: 0013_signal_suspects
Revises: 0012_dedupe_thumb
Create Date: 2026-11-29 21:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_signal_suspects"
down_revision: str | Sequence[str] | None = "0012_dedupe_thumb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signal_suspect_counts",
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("width_s", sa.Integer(), nullable=False),
        sa.Column("bucket_s", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "kind", "value", "width_s", "bucket_s", name=op.f("pk_signal_suspect_counts")
        ),
    )


def downgrade() -> None:
    op.drop_table("signal_suspect_counts")
