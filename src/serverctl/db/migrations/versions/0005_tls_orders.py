"""tls orders

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import serverctl.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tls_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("names", serverctl.db.types.JSONText(), nullable=False),
        sa.Column("names_key", sa.String(length=2600), nullable=False),
        sa.Column("csr", sa.Text(), nullable=False),
        sa.Column("csr_sha256", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("chain", sa.Text(), nullable=True),
        sa.Column("not_after", serverctl.db.types.UTCDateTime(), nullable=True),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("retry_at", serverctl.db.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", serverctl.db.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", serverctl.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id"),
    )
    with op.batch_alter_table("tls_orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tls_orders_member_id"), ["member_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tls_orders_names_key"), ["names_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_tls_orders_pool_id"), ["pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tls_orders_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_tls_orders_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tls_orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tls_orders_updated_at"))
        batch_op.drop_index(batch_op.f("ix_tls_orders_state"))
        batch_op.drop_index(batch_op.f("ix_tls_orders_pool_id"))
        batch_op.drop_index(batch_op.f("ix_tls_orders_names_key"))
        batch_op.drop_index(batch_op.f("ix_tls_orders_member_id"))
    op.drop_table("tls_orders")
