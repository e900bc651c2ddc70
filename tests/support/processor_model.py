"""The obvious model of the processor (webhooks applied one at a time, in stream order) and a hypothesis
strategy for webhook streams cut into batches.

Tests compare the batched, set-based processor against the model. It reads only the rule of
docs/architecture.md (a webhook is processed iff its (updated_at, webhook id) is greater than the stored pair;
version += 1 per processed webhook; an id already audited changes nothing and re-publishes its event).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fincart_core.domain import shipping_fee
from fincart_processor.decisions import Webhook
from hypothesis import strategies as st


@dataclass(frozen=True)
class Row:
    version: int
    last_at: datetime
    last_webhook_id: str
    status: str
    total_price: Decimal | None
    shipping_fee: Decimal


@dataclass
class Model:
    rows: dict[str, Row] = field(default_factory=dict)
    audit: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # webhook id -> (status, version)
    events: list[tuple[str, int, str]] = field(default_factory=list)  # (order id, version, webhook id), new ones
    republished: list[tuple[str, int, str]] = field(default_factory=list)

    def apply(self, w) -> None:  # type: ignore[no-untyped-def]  # anything shaped like decisions.Webhook
        if w.webhook_id in self.audit:
            status, version = self.audit[w.webhook_id]
            if status == "processed":
                assert version is not None
                self.republished.append((w.order_id, version, w.webhook_id))
            return
        row = self.rows.get(w.order_id)
        if row is None or (w.updated_at, w.webhook_id) > (row.last_at, row.last_webhook_id):
            version = (row.version if row else 0) + 1
            self.rows[w.order_id] = Row(version, w.updated_at, w.webhook_id, w.status, w.total_price, w.shipping_fee)
            self.audit[w.webhook_id] = ("processed", version)
            self.events.append((w.order_id, version, w.webhook_id))
        else:
            self.audit[w.webhook_id] = ("discarded", None)


BASE = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = ("PENDING", "CONFIRMED", "SHIPPED", "CANCELLED")
PRICES = (None, Decimal("10.00"), Decimal("75.50"), Decimal("150.00"), Decimal("999.99"))


def webhook(
    webhook_id: str, order_id: str, second: int, status: str = "PENDING", price: Decimal | None = Decimal("10")
) -> Webhook:
    return Webhook(
        webhook_id,
        order_id,
        BASE + timedelta(seconds=second),
        status,  # type: ignore[arg-type]
        price,
        shipping_fee(price),
        BASE,
    )


@st.composite
def deliveries(draw: st.DrawFn, max_webhooks: int = 40, max_deliveries: int = 80) -> list[list[Webhook]]:
    """A stream of webhooks (few orders, few distinct timestamps so the id must break ties, duplicates and
    redeliveries of earlier ones) cut into batches at random points."""
    n = draw(st.integers(1, max_webhooks))
    orders = draw(st.integers(1, 6))
    pool = [
        webhook(
            f"w{i:02d}",
            f"order-{draw(st.integers(0, orders - 1))}",
            draw(st.integers(0, 4)),
            draw(st.sampled_from(STATUSES)),
            draw(st.sampled_from(PRICES)),
        )
        for i in range(n)
    ]
    stream = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=max_deliveries))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=8)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True) if stream[a:b]]
