"""Dedupe: keep each stored photo's grayscale thumbnail, to verify loose crop candidates.

Revision ID: 0012_dedupe_thumb
Revises: 0011_dedupe_pdq
Create Date: 2026-11-29 18:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_dedupe_thumb"
down_revision: str | Sequence[str] | None = "0011_dedupe_pdq"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("thumb", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("photos", schema=None) as batch_op:
        batch_op.drop_column("thumb")
