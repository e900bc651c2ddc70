"""Publishes change events after commit: per order strictly in version order, orders concurrently."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from fincart_core.contracts.events import OrderEvent
from fincart_core.partition import Topology
from fincart_core.telemetry import inject_headers
from nats.js import JetStreamContext
from opentelemetry.context import Context

from fincart_processor.metrics import EVENTS_PUBLISHED

PUBLISH_TIMEOUT_S = 5.0
MAX_CONCURRENT_ORDERS = 256


class EventPublisher:
    def __init__(self, js: JetStreamContext, topology: Topology) -> None:
        self._js = js
        self._topology = topology
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_ORDERS)

    async def publish(self, events: Sequence[tuple[OrderEvent, Context | None]]) -> None:
        """Every event acknowledged by JetStream, or an exception (the batch is then retried and its
        webhooks come back as redeliveries, whose events are published again; Nats-Msg-Id dedupes)."""
        by_order: dict[str, list[tuple[OrderEvent, Context | None]]] = defaultdict(list)
        for event, context in events:
            by_order[event.order.shopify_order_id].append((event, context))
        # versions ascending even when a batch mixes re-published (older) and new versions of an order
        await asyncio.gather(*(self._publish_in_order(sorted(chain, key=lambda ec: ec[0].order.version))
                               for chain in by_order.values()))

    async def _publish_in_order(self, chain: list[tuple[OrderEvent, Context | None]]) -> None:
        async with self._slots:
            for event, context in chain:  # awaited one by one: the stream keeps the version order
                await self._js.publish(
                    self._topology.event_subject_for(event.order.shopify_order_id),
                    event.model_dump_json().encode(), timeout=PUBLISH_TIMEOUT_S,
                    headers=inject_headers({"Nats-Msg-Id": event.msg_id}, context),
                )
                EVENTS_PUBLISHED.inc()
