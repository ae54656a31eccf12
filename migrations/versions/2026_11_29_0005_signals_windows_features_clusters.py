"""Signals: rolling-window counts, per-account features, signal accounts, clusters (with running
member counts and per-cluster feature counts), results.

Revision ID: 0005_signals
Revises: 0004_dedupe
Create Date: 2026-11-29 15:33:05.675009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005_signals'
down_revision: str | Sequence[str] | None = '0004_dedupe'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('signal_account_features',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('value', sa.String(length=200), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('seen_s', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'kind', 'value', name=op.f('pk_signal_account_features'))
    )
    with op.batch_alter_table('signal_account_features', schema=None) as batch_op:
        batch_op.create_index('ix_signal_account_features_value', ['kind', 'value', 'seen_s'], unique=False)

    op.create_table('signal_accounts',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('created_s', sa.BigInteger(), nullable=False),
    sa.Column('ai_face', sa.Boolean(), nullable=False),
    sa.Column('reused_photo', sa.Boolean(), nullable=False),
    sa.Column('burst', sa.Boolean(), nullable=False),
    sa.Column('cluster_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_signal_accounts'))
    )
    with op.batch_alter_table('signal_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signal_accounts_cluster_id'), ['cluster_id'], unique=False)

    op.create_table('signal_clusters',
    sa.Column('cluster_id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('ai_faces', sa.Integer(), server_default='0', nullable=False),
    sa.Column('reused_photos', sa.Integer(), server_default='0', nullable=False),
    sa.Column('burst_members', sa.Integer(), server_default='0', nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('parts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('binding', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_s', sa.BigInteger(), nullable=False),
    sa.Column('updated_s', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('cluster_id', name=op.f('pk_signal_clusters'))
    )
    op.create_table('signal_cluster_features',
    sa.Column('cluster_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('value', sa.String(length=200), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('members', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('cluster_id', 'kind', 'value', name=op.f('pk_signal_cluster_features'))
    )
    op.create_table('signal_counts',
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('value', sa.String(length=200), nullable=False),
    sa.Column('width_s', sa.Integer(), nullable=False),
    sa.Column('bucket_s', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'value', 'width_s', 'bucket_s', name=op.f('pk_signal_counts'))
    )
    with op.batch_alter_table('signal_counts', schema=None) as batch_op:
        batch_op.create_index('ix_signal_counts_bucket', ['width_s', 'bucket_s'], unique=False)

    op.create_table('signal_results',
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('cluster', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_s', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_signal_results'))
    )
    with op.batch_alter_table('signal_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signal_results_created_s'), ['created_s'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('signal_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signal_results_created_s'))

    op.drop_table('signal_results')
    with op.batch_alter_table('signal_counts', schema=None) as batch_op:
        batch_op.drop_index('ix_signal_counts_bucket')

    op.drop_table('signal_counts')
    op.drop_table('signal_cluster_features')
    op.drop_table('signal_clusters')
    with op.batch_alter_table('signal_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signal_accounts_cluster_id'))

    op.drop_table('signal_accounts')
    with op.batch_alter_table('signal_account_features', schema=None) as batch_op:
        batch_op.drop_index('ix_signal_account_features_value')

    op.drop_table('signal_account_features')
