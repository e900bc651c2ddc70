"""orders: index for GET /orders keyset paging on (created_at, id)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # created_at and id never change after the insert, so a page boundary cannot move under a client
    op.create_index("ix_orders_created_at_id", "orders", ["created_at", "id"])
    op.create_index("ix_orders_status_created_at_id", "orders", ["status", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_orders_status_created_at_id", "orders")
    op.drop_index("ix_orders_created_at_id", "orders")
