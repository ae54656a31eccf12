"""Review: lease/outcome columns on review_items, reviewers, append-only audit log, labels.

Revision ID: 0006_review
Revises: 0005_signals
Create Date: 2026-11-29 15:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_review"
down_revision: str | Sequence[str] | None = "0005_signals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION review_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'review_audit is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def upgrade() -> None:
    with op.batch_alter_table("review_items") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("decided_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("escalation_level", sa.Integer(), server_default="0",
                                   nullable=False))
    op.create_index(
        "ix_review_items_open_order", "review_items",
        ["queue", "escalation_level", sa.text("priority DESC"), "created_at"],
        unique=False,
        postgresql_where=sa.text("open_key IS NOT NULL"),
        sqlite_where=sa.text("open_key IS NOT NULL"),
    )

    op.create_table(
        "reviewers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviewers")),
        sa.UniqueConstraint("username", name=op.f("uq_reviewers_username")),
    )
    op.create_table(
        "review_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("actor_role", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_audit")),
    )
    op.create_index(op.f("ix_review_audit_at"), "review_audit", ["at"], unique=False)
    op.create_index(op.f("ix_review_audit_actor"), "review_audit", ["actor"], unique=False)
    op.create_index(op.f("ix_review_audit_item_id"), "review_audit", ["item_id"], unique=False)
    op.create_table(
        "review_labels",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("avatar_sha256", sa.String(length=64), nullable=True),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("decision_id", sa.String(length=200), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_labels")),
    )
    op.create_index(op.f("ix_review_labels_created_at"), "review_labels", ["created_at"],
                    unique=False)
    op.create_index(op.f("ix_review_labels_account_id"), "review_labels", ["account_id"],
                    unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_APPEND_ONLY)
        op.execute("CREATE TRIGGER review_audit_no_update_delete BEFORE UPDATE OR DELETE "
                   "ON review_audit FOR EACH ROW EXECUTE FUNCTION review_audit_append_only()")
        op.execute("CREATE TRIGGER review_audit_no_truncate BEFORE TRUNCATE ON review_audit "
                   "FOR EACH STATEMENT EXECUTE FUNCTION review_audit_append_only()")
    else:
        op.execute("CREATE TRIGGER review_audit_no_update BEFORE UPDATE ON review_audit "
                   "BEGIN SELECT RAISE(ABORT, 'review_audit is append-only'); END")
        op.execute("CREATE TRIGGER review_audit_no_delete BEFORE DELETE ON review_audit "
                   "BEGIN SELECT RAISE(ABORT, 'review_audit is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS review_audit_no_truncate ON review_audit")
        op.execute("DROP TRIGGER IF EXISTS review_audit_no_update_delete ON review_audit")
        op.execute("DROP FUNCTION IF EXISTS review_audit_append_only()")
    op.drop_table("review_labels")
    op.drop_table("review_audit")
    op.drop_table("reviewers")
    op.drop_index("ix_review_items_open_order", table_name="review_items")
    with op.batch_alter_table("review_items") as batch:
        batch.drop_column("escalation_level")
        batch.drop_column("outcome")
        batch.drop_column("decided_by")
        batch.drop_column("decided_at")
        batch.drop_column("claimed_at")
