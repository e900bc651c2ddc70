"""Change events: what the processor publishes on ``orders.events.<p>`` after commit."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal
from uuid import UUID

from pydantic import BaseModel

OrderStatus = Literal["PENDING", "CONFIRMED", "SHIPPED", "CANCELLED"]


class OrderState(BaseModel):
    """One row of ``orders`` as clients see it (also the body of ``GET /orders/{id}``)."""

    id: UUID
    shopify_order_id: str
    status: OrderStatus
    total_price: Decimal | None
    shipping_fee: Decimal
    version: int
    last_external_updated_at: datetime
    last_webhook_id: str
    created_at: datetime
    updated_at: datetime


class OrderEvent(BaseModel):
    """One applied version of an order. ``Nats-Msg-Id`` is ``<shopify_order_id>:<version>``."""

    type: Literal["order.updated"] = "order.updated"
    order: OrderState
    # when ingest received the webhook that made this version (sync's webhook -> WebSocket latency)
    received_at: datetime | None = None

    @property
    def msg_id(self) -> str:
        return event_msg_id(self.order.shopify_order_id, self.order.version)


def event_msg_id(shopify_order_id: str, version: int) -> str:
    return f"{shopify_order_id}:{version}"
