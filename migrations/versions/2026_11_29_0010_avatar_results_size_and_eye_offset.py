"""Avatar results: declared picture size and the eye-offset feature.

Revision ID: 0010_avatar_features
Revises: 0006_review
Create Date: 2026-11-29 15:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_avatar_features"
down_revision: str | Sequence[str] | None = "0006_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("avatar_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("width", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("height", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("eye_offset", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("avatar_results", schema=None) as batch_op:
        batch_op.drop_column("eye_offset")
        batch_op.drop_column("height")
        batch_op.drop_column("width")
