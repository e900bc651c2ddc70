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


class EventPublisher:
    def __init__(self, js: JetStreamContext, topology: Topology) -> None:
        self._js = js
        self._topology = topology

    async def publish(self, events: Sequence[tuple[OrderEvent, Context | None]]) -> None:
        """Every event acknowledged by JetStream, or an exception (the batch is then retried and its
        webhooks come back as redeliveries, whose events are published again; Nats-Msg-Id dedupes)."""
        by_order: dict[str, list[tuple[OrderEvent, Context | None]]] = defaultdict(list)
        for event, context in events:
            by_order[event.order.shopify_order_id].append((event, context))
        # versions ascending even when a batch mixes re-published (older) and new versions of an order
        chains = [sorted(chain, key=lambda ec: ec[0].order.version) for chain in by_order.values()]
        # Round k publishes the k-th event of every order, pipelined on the connection, and round k + 1 starts
        # only once all of round k is acknowledged: an order's next version is never sent before the previous
        # one is stored, as with one awaited publish at a time, but a batch costs one round trip per round.
        for k in range(max(map(len, chains), default=0)):
            await self._publish_round([chain[k] for chain in chains if len(chain) > k])

    async def _publish_round(self, events: list[tuple[OrderEvent, Context | None]]) -> None:
        acks: list[asyncio.Future[object]] = []
        try:
            for event, context in events:
                acks.append(await self._js.publish_async(
                    self._topology.event_subject_for(event.order.shopify_order_id),
                    event.model_dump_json().encode(),
                    headers=inject_headers({"Nats-Msg-Id": event.msg_id}, context),
                ))
            await asyncio.wait_for(asyncio.gather(*acks), PUBLISH_TIMEOUT_S)
        finally:
            for ack in acks:  # after a failure: frees the client's pending slot of every unanswered publish
                ack.cancel()
        EVENTS_PUBLISHED.inc(len(events))
