"""The seed system's domain rules: order status and shipping fee from a webhook, and ordering."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from fincart_core.contracts.events import OrderStatus

FULFILLMENT_STATUS: dict[str, OrderStatus] = {
    "fulfilled": "SHIPPED",
    "partial": "CONFIRMED",
    "restocked": "CANCELLED",
}
FINANCIAL_STATUS: dict[str, OrderStatus] = {
    "pending": "PENDING",
    "authorized": "PENDING",
    "paid": "CONFIRMED",
    "partially_paid": "CONFIRMED",
    "partially_refunded": "CONFIRMED",
    "refunded": "CANCELLED",
    "voided": "CANCELLED",
}
# (upper bound exclusive, fee): the first tier whose bound exceeds the total wins.
SHIPPING_TIERS: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal("50"), Decimal("9.99")),
    (Decimal("100"), Decimal("7.99")),
    (Decimal("200"), Decimal("5.99")),
)
FREE_SHIPPING = Decimal("0.00")


def order_status(financial_status: str | None, fulfillment_status: str | None) -> OrderStatus:
    """Fulfillment mapping when it knows the value, else the financial mapping, else PENDING."""
    if fulfillment_status and fulfillment_status in FULFILLMENT_STATUS:
        return FULFILLMENT_STATUS[fulfillment_status]
    return FINANCIAL_STATUS.get(financial_status or "", "PENDING")


def shipping_fee(total_price: Decimal | None) -> Decimal:
    """Fee tier by order total; a missing total pays the highest fee like an empty cart."""
    total = total_price if total_price is not None else Decimal("0")
    for bound, fee in SHIPPING_TIERS:
        if total < bound:
            return fee
    return FREE_SHIPPING


def supersedes(updated_at: datetime, webhook_id: str, stored_at: datetime, stored_id: str) -> bool:
    """A webhook is applied when ``(updated_at, webhook_id)`` is greater than the stored pair."""
    return (updated_at, webhook_id) > (stored_at, stored_id)
