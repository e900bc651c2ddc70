"""Building webhooks the way Shopify sends them (shared by the pipeline and processor tests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.partition import Topology
from fincart_core.signing import sign

BASE = datetime(2026, 1, 1, tzinfo=UTC)
FINANCIAL = ("pending", "authorized", "paid", "partially_paid", "refunded", "voided", "partially_refunded")
FULFILLMENT = (None, None, "fulfilled", "partial", "restocked")
PRICES = ("19.90", "49.99", "50.00", "99.99", "150.00", "250.00")


def order_payload(order_id: str, i: int, updated_at: datetime | None = None) -> dict[str, object]:
    """The i-th update of an order: its own status, total (so fee) and updated_at."""
    return {
        "id": order_id,
        "updated_at": (updated_at or BASE + timedelta(seconds=i)).isoformat(),
        "financial_status": FINANCIAL[i % len(FINANCIAL)],
        "fulfillment_status": FULFILLMENT[i % len(FULFILLMENT)],
        "total_price": PRICES[i % len(PRICES)],
        "shipping_lines": [{"price": "5.00", "title": "Standard"}],
    }


def signed_request(payload: dict[str, object], webhook_id: str, secret: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Topic": "orders/updated",
        "X-Shopify-Shop-Domain": "chaos.myshopify.com",
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
        "Content-Type": "application/json",
    }


async def publish_webhook(js, topology: Topology, payload: dict[str, object], webhook_id: str) -> int:  # type: ignore[no-untyped-def]
    """Publish straight onto ORDERS as ingest does (for tests that run the processor alone)."""
    message = WebhookMessage(
        webhook_id=webhook_id, topic="orders/updated", received_at=datetime.now(UTC), order=payload
    )
    ack = await js.publish(
        topology.webhook_subject_for(str(payload["id"])),
        message.model_dump_json().encode(),
        headers={"Nats-Msg-Id": webhook_id},
    )
    return ack.seq
