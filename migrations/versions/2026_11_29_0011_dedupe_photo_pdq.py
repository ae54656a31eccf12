"""Dedupe: keep each stored photo's PDQ hashes, to verify pHash candidates.

Revision ID: 0011_dedupe_pdq
Revises: 0010_avatar_features
Create Date: 2026-11-29 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_dedupe_pdq"
down_revision: str | Sequence[str] | None = "0010_avatar_features"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pdq", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("pdq_mirror", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.drop_column("pdq_mirror")
        batch_op.drop_column("pdq")
