"""Shopify webhook contract: the HTTP body we accept and the message ingest puts on the stream."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

WebhookTopic = Literal["orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled"]
WEBHOOK_TOPICS: tuple[str, ...] = WebhookTopic.__args__  # type: ignore[attr-defined]

# The accepted updated_at, in UTC: every value in it converts to any UTC offset and back inside Python's
# datetime (years 1..9999) and PostgreSQL's timestamptz. 0001-01-01T00:00:00+01:00 (year 0 in UTC) and
# 9999-12-31T23:30:00-01:00 (year 10000) were accepted once and overflowed the processor's conversion.
UPDATED_AT_MIN = datetime(1970, 1, 1, tzinfo=UTC)
UPDATED_AT_MAX = datetime(9999, 12, 30, tzinfo=UTC)


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
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        try:
            in_range = UPDATED_AT_MIN <= aware.astimezone(UTC) <= UPDATED_AT_MAX
        except OverflowError:
            in_range = False
        if not in_range:
            raise ValueError(f"must be between {UPDATED_AT_MIN:%Y-%m-%d} and {UPDATED_AT_MAX:%Y-%m-%d} in UTC")
        return aware


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
