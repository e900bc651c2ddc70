"""Tables (SQLModel). The schema itself is owned by the alembic migrations next to this module."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, Numeric, Text, func
from sqlmodel import Field, SQLModel

AUDIT_STATUSES = ("processed", "discarded", "failed")


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (CheckConstraint("status IN ('PENDING','CONFIRMED','SHIPPED','CANCELLED')"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    shopify_order_id: str = Field(sa_column=Column(Text, unique=True, nullable=False))
    status: str = Field(sa_column=Column(Text, nullable=False))
    total_price: Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 2)))
    shipping_fee: Decimal = Field(sa_column=Column(Numeric(12, 2), nullable=False))
    version: int = Field(nullable=False)
    last_external_updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_webhook_id: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    updated_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (CheckConstraint("status IN ('processed','discarded','failed')"),)

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: str = Field(sa_column=Column(Text, unique=True, nullable=False))
    shopify_order_id: str = Field(sa_column=Column(Text, nullable=False, index=True))
    status: str = Field(sa_column=Column(Text, nullable=False))
    message: str | None = Field(default=None, sa_column=Column(Text))
    # The order version this webhook produced (processed only): lets a redelivery re-publish its event.
    version: int | None = Field(default=None)
    external_updated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    received_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class PartitionLease(SQLModel, table=True):
    """Which processor replica applies a partition, until when; ``token`` goes up on every change of owner
    and is checked inside each batch transaction (fencing)."""

    __tablename__ = "partition_leases"

    partition: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    owner: str = Field(sa_column=Column(Text, nullable=False))
    token: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ProcessorReplica(SQLModel, table=True):
    """A live processor replica's heartbeat: the replicas that share the partitions."""

    __tablename__ = "processor_replicas"

    replica: str = Field(sa_column=Column(Text, primary_key=True))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
