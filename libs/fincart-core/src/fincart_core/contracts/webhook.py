"""Shopify webhook contract: the HTTP body we accept and the message ingest puts on the stream."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

WebhookTopic = Literal[
    "orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled"
]
WEBHOOK_TOPICS: tuple[str, ...] = WebhookTopic.__args__  # type: ignore[attr-defined]


class ShippingLine(BaseModel):
    model_config = ConfigDict(extra="allow")

    price: Decimal = Field(ge=0)
    title: str | None = None


class ShopifyOrder(BaseModel):
    """The fields FinCart reads from an order payload; other fields are kept in the stored payload."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=255)
    updated_at: datetime
    financial_status: str | None = None
    fulfillment_status: str | None = None
    total_price: Decimal | None = Field(default=None, ge=0, max_digits=12, decimal_places=2)
    shipping_lines: list[ShippingLine] = Field(default_factory=list)

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, value: Any) -> Any:
        # Shopify sends integer ids; the seed's clients send strings. Both name the same order.
        if isinstance(value, bool):
            raise ValueError("id must be a string or an integer")
        return str(value) if isinstance(value, int) else value

    @field_validator("updated_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # A naive timestamp is taken as UTC so that every comparison is between aware datetimes.
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class WebhookMessage(BaseModel):
    """What ingest publishes on ``orders.webhooks.<p>`` (JSON); ``Nats-Msg-Id`` is the webhook id."""

    webhook_id: str
    topic: str
    shop_domain: str | None = None
    triggered_at: str | None = None
    received_at: datetime
    order: dict[str, Any]

    def parsed_order(self) -> ShopifyOrder:
        return ShopifyOrder.model_validate(self.order)


class WebhookAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    webhook_id: str = Field(serialization_alias="webhookId")


class WebhookDuplicate(BaseModel):
    status: Literal["duplicate"] = "duplicate"
    webhook_id: str = Field(serialization_alias="webhookId")
    message: str = "webhook already received"


class ErrorResponse(BaseModel):
    detail: str
