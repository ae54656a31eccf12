"""Dedupe: stored photos (bank entries, account avatars) and their banded 64-bit hashes.

Revision ID: 0004_dedupe
Revises: 0001_foundation
Create Date: 2026-11-29 15:33:35.094099
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004_dedupe'
down_revision: str | Sequence[str] | None = '0001_foundation'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('photo_hashes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('photo_id', sa.String(length=200), nullable=False),
    sa.Column('family', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('b0', sa.Integer(), nullable=False),
    sa.Column('b1', sa.Integer(), nullable=False),
    sa.Column('b2', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_photo_hashes')),
    sa.UniqueConstraint('photo_id', 'kind', name='uq_photo_hashes_photo_kind')
    )
    with op.batch_alter_table('photo_hashes', schema=None) as batch_op:
        batch_op.create_index('ix_photo_hashes_b0', ['family', 'b0'], unique=False)
        batch_op.create_index('ix_photo_hashes_b1', ['family', 'b1'], unique=False)
        batch_op.create_index('ix_photo_hashes_b2', ['family', 'b2'], unique=False)

    op.create_table('photos',
    sa.Column('photo_id', sa.String(length=200), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=True),
    sa.Column('event_id', sa.String(length=128), nullable=True),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('origin', sa.String(length=500), nullable=True),
    sa.Column('added_by', sa.String(length=128), nullable=True),
    sa.Column('filename', sa.String(length=500), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('photo_id', name=op.f('pk_photos')),
    sa.UniqueConstraint('event_id', name=op.f('uq_photos_event_id'))
    )
    with op.batch_alter_table('photos', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_photos_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_photos_sha256'), ['sha256'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('photos', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_photos_sha256'))
        batch_op.drop_index(batch_op.f('ix_photos_account_id'))

    op.drop_table('photos')
    with op.batch_alter_table('photo_hashes', schema=None) as batch_op:
        batch_op.drop_index('ix_photo_hashes_b2')
        batch_op.drop_index('ix_photo_hashes_b1')
        batch_op.drop_index('ix_photo_hashes_b0')

    op.drop_table('photo_hashes')
