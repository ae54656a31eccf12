"""Dedupe: keep each stored photo's ORB keypoints and descriptors, so verifying a candidate does
not recompute the stored side.

Revision ID: 0014_dedupe_keypoints
Revises: 0013_signal_suspects
Create Date: 2026-11-29 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_dedupe_keypoints"
down_revision: str | Sequence[str] | None = "0013_signal_suspects"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keypoints", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.drop_column("keypoints")
