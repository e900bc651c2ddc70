"""What a batch does, decided without I/O: which webhooks are processed or discarded, the versions they
produce and the events to publish. It gives exactly the result of applying the batch's webhooks one by
one in stream order, which the property tests check against a one-at-a-time reference model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from fincart_core.contracts.events import OrderStatus
from fincart_core.contracts.webhook import ShopifyOrder, WebhookMessage
from fincart_core.domain import order_status, shipping_fee, supersedes

AuditStatus = Literal["processed", "discarded", "failed"]


class _WebhookWithOrder(WebhookMessage):
    """The same contract, with the order validated in the same (Rust) pass as the envelope."""

    order: ShopifyOrder  # type: ignore[assignment]


@dataclass(frozen=True)
class Webhook:
    """One parsed webhook, with the order fields it would set."""

    webhook_id: str
    order_id: str
    updated_at: datetime
    status: OrderStatus
    total_price: Decimal | None
    shipping_fee: Decimal
    received_at: datetime

    @classmethod
    def from_json(cls, data: bytes) -> Webhook:
        """A stream message body; pydantic's ValidationError when it is not a WebhookMessage whose order is
        a ShopifyOrder (poison)."""
        message = _WebhookWithOrder.model_validate_json(data)
        return cls._build(message, message.order)

    @classmethod
    def from_message(cls, message: WebhookMessage) -> Webhook:
        return cls._build(message, message.parsed_order())

    @classmethod
    def _build(cls, message: WebhookMessage, order: ShopifyOrder) -> Webhook:
        if "\x00" in message.webhook_id or "\x00" in order.id:
            # valid JSON, but PostgreSQL text cannot hold NUL: it would fail every retry and stall the partition
            raise ValueError("webhook id or order id contains a NUL character")
        for name, value in (("updated_at", order.updated_at), ("received_at", message.received_at)):
            _representable_in_utc(name, value)
        return cls(
            webhook_id=message.webhook_id,
            order_id=order.id,
            updated_at=order.updated_at,
            status=order_status(order.financial_status, order.fulfillment_status),
            total_price=order.total_price,
            shipping_fee=shipping_fee(order.total_price),
            received_at=message.received_at,
        )


def _representable_in_utc(name: str, value: datetime) -> None:
    """A valid ISO timestamp such as 0001-01-01T00:00:00+01:00 has no UTC equivalent in Python (or in the
    database driver): it could never be compared or stored, so it is rejected as poison, not retried."""
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{name} {value.isoformat()} is outside the range of UTC timestamps") from exc


@dataclass(frozen=True)
class Stored:
    """What decides the next webhook of an order: its version and last applied (updated_at, id)."""

    version: int
    last_at: datetime
    last_webhook_id: str


@dataclass(frozen=True)
class Applied:
    """A processed webhook and the order version it produced."""

    webhook: Webhook
    version: int


@dataclass
class Plan:
    audit: list[tuple[Webhook, AuditStatus, int | None]] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)  # stream order: one event each
    redelivered: list[Applied] = field(default_factory=list)  # processed earlier: re-publish their event

    def final_per_order(self) -> dict[str, Applied]:
        """The last applied version of each order: the row to upsert."""
        return {a.webhook.order_id: a for a in self.applied}


def plan_batch(webhooks: Sequence[Webhook], stored: Mapping[str, Stored], audited: Mapping[str, int | None]) -> Plan:
    """``stored``: current row per order id (absent: no row yet); ``audited``: webhook ids already in
    audit_log with the version they produced (None for discarded or failed)."""
    plan = Plan()
    state = dict(stored)
    seen: set[str] = set()
    for webhook in webhooks:
        if webhook.webhook_id in seen:
            continue  # the same webhook twice in one batch is one webhook
        seen.add(webhook.webhook_id)
        if webhook.webhook_id in audited:
            version = audited[webhook.webhook_id]
            if version is not None:
                plan.redelivered.append(Applied(webhook, version))
            continue
        current = state.get(webhook.order_id)
        if current is None or supersedes(
            webhook.updated_at, webhook.webhook_id, current.last_at, current.last_webhook_id
        ):
            version = (current.version if current else 0) + 1
            state[webhook.order_id] = Stored(version, webhook.updated_at, webhook.webhook_id)
            plan.applied.append(Applied(webhook, version))
            plan.audit.append((webhook, "processed", version))
        else:
            plan.audit.append((webhook, "discarded", None))
    return plan
