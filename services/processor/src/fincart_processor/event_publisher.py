"""Publishes change events after commit: per order strictly in version order, orders concurrently."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import Sequence

import nats.js.errors
from fincart_core.contracts.events import OrderEvent
from fincart_core.partition import Topology
from fincart_core.telemetry import inject_headers
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from fincart_processor.metrics import EVENTS_PUBLISHED
from fincart_processor.remote_trace import RemoteTrace, links_recorded

PUBLISH_TIMEOUT_S = 5.0
NO_RESPONDERS = "503"
tracer = trace.get_tracer("fincart_processor")


def event_headers(event: OrderEvent, remote: RemoteTrace | None, recorded: bool) -> dict[str, str]:
    """The event continues its webhook's trace. When spans are ``recorded`` it does so through a span of its own,
    a child of the webhook's span linked to the batch span (current here), so that the trace shows the
    processor between ingest and sync; otherwise the webhook's context is passed on as it came."""
    headers = {"Nats-Msg-Id": event.msg_id}
    if remote is None:
        return inject_headers(headers)
    if not recorded:
        return remote.inject(headers)
    batch = trace.get_current_span().get_span_context()
    with tracer.start_as_current_span(
        "publish event",
        context=remote.context,
        kind=SpanKind.PRODUCER,
        links=[trace.Link(batch)] if batch.is_valid else [],
    ) as span:
        span.set_attributes(
            {
                "fincart.order_id": event.order.shopify_order_id,
                "fincart.webhook_id": event.order.last_webhook_id,
                "fincart.version": event.order.version,
            }
        )
        return inject_headers(headers)


class EventPublisher:
    """JetStream publishes whose PubAcks come back on one inbox subscription of this publisher: nats-py's
    publish_async does the same with a random token, a semaphore slot and a parsed PubAck per message,
    none of which is needed to know that an event is stored."""

    def __init__(self, nc: NATS, topology: Topology) -> None:
        self._nc = nc
        self._topology = topology
        self._inbox = ""
        self._tokens = itertools.count()
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        self._inbox = f"{self._nc.new_inbox()}."
        await self._nc.subscribe(f"{self._inbox}*", cb=self._on_ack)

    async def publish(self, events: Sequence[tuple[OrderEvent, RemoteTrace | None]]) -> None:
        """Every event acknowledged by JetStream, or an exception (the batch is then retried and its
        webhooks come back as redeliveries, whose events are published again; Nats-Msg-Id dedupes)."""
        by_order: dict[str, list[tuple[OrderEvent, RemoteTrace | None]]] = defaultdict(list)
        for event, remote in events:
            by_order[event.order.shopify_order_id].append((event, remote))
        # versions ascending even when a batch mixes re-published (older) and new versions of an order
        chains = [sorted(chain, key=lambda ec: ec[0].order.version) for chain in by_order.values()]
        # Round k publishes the k-th event of every order, pipelined on the connection, and round k + 1 starts
        # only once all of round k is acknowledged: an order's next version is never sent before the previous
        # one is stored, as with one awaited publish at a time, but a batch costs one round trip per round.
        for k in range(max(map(len, chains), default=0)):
            await self._publish_round([chain[k] for chain in chains if len(chain) > k])

    async def _publish_round(self, events: list[tuple[OrderEvent, RemoteTrace | None]]) -> None:
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        acks: list[asyncio.Future[None]] = []
        recorded = links_recorded()
        try:
            for event, remote in events:
                token = str(next(self._tokens))
                tokens.append(token)
                acks.append(ack := loop.create_future())
                self._pending[token] = ack
                await self._nc.publish(
                    self._topology.event_subject_for(event.order.shopify_order_id),
                    event.model_dump_json().encode(),
                    reply=self._inbox + token,
                    headers=event_headers(event, remote, recorded),
                )
            await asyncio.wait_for(asyncio.gather(*acks), PUBLISH_TIMEOUT_S)
        finally:
            for token in tokens:  # answered ones are gone already; after a failure the rest are dropped
                if (unanswered := self._pending.pop(token, None)) is not None:
                    unanswered.cancel()
        EVENTS_PUBLISHED.inc(len(events))

    async def _on_ack(self, msg: Msg) -> None:
        ack = self._pending.pop(msg.subject[len(self._inbox) :], None)
        if ack is None or ack.done():  # late answer of a round that already failed
            return
        if msg.headers and msg.headers.get(nats.js.api.Header.STATUS) == NO_RESPONDERS:
            ack.set_exception(nats.js.errors.NoStreamResponseError())
        # nats-server writes an error key as "error": PubAcks without those bytes are not parsed (~1.3 us an event)
        elif b'"error"' in msg.data and "error" in (response := json.loads(msg.data)):
            ack.set_exception(nats.js.errors.APIError.from_error(response["error"]))
        else:
            ack.set_result(None)
