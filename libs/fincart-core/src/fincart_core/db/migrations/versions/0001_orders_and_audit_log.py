"""orders and audit_log

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("shopify_order_id", sa.Text(), nullable=False, unique=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("total_price", sa.Numeric(12, 2)),
        sa.Column("shipping_fee", sa.Numeric(12, 2), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_external_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_webhook_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('PENDING','CONFIRMED','SHIPPED','CANCELLED')", name="orders_status"),
    )
    op.create_index("ix_orders_status_updated_at", "orders", ["status", "updated_at"])
    op.create_index("ix_orders_updated_at", "orders", ["updated_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("webhook_id", sa.Text(), nullable=False, unique=True),
        sa.Column("shopify_order_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("message", sa.Text()),
        sa.Column("version", sa.Integer()),
        sa.Column("external_updated_at", sa.DateTime(timezone=True)),
        sa.Column("received_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('processed','discarded','failed')", name="audit_log_status"),
    )
    op.create_index("ix_audit_log_shopify_order_id", "audit_log", ["shopify_order_id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("orders")
