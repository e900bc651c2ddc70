"""ORDER_EVENTS -> hub: one ordered consumer per sync process, plus per-client replays for ``since``.

The live consumer starts after the stream's last sequence at start-up and, after a broker restart or
any subscription failure, re-subscribes from ``hub.last_seq + 1``; the hub drops seqs it already saw,
so the fan-out never skips nor repeats a sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fincart_core.contracts.events import OrderEvent
from fincart_core.partition import Topology
from fincart_core.telemetry import extract_context
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from pydantic import ValidationError

from fincart_sync.hub import Frame, Hub
from fincart_sync.protocol import event_frame

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fincart_sync")
RESUBSCRIBE_BACKOFF_MAX_S = 5.0


def to_frame(msg: Msg) -> Frame | None:
    """The frame for one stream message; None (logged) for a message that is not an OrderEvent."""
    meta = msg.metadata
    seq = meta.sequence.stream
    try:
        event = OrderEvent.model_validate_json(msg.data)
    except ValidationError as exc:
        log.warning("skipping an event that is not an OrderEvent", extra={"seq": seq, "error": str(exc)[:500]})
        return None
    order = event.order
    trace.get_current_span().set_attributes(
        {"fincart.order_id": order.shopify_order_id, "fincart.webhook_id": order.last_webhook_id, "fincart.seq": seq}
    )
    return Frame(
        seq=seq,
        order_id=order.shopify_order_id,
        text=event_frame(seq, order.model_dump_json(), order.version),
        stored_at=meta.timestamp.timestamp(),
        received_at=event.received_at.timestamp() if event.received_at else None,
    )


async def stream_last_seq(js: JetStreamContext, topology: Topology) -> tuple[int, int]:
    """(first_seq, last_seq) of ORDER_EVENTS right now."""
    info = await js.stream_info(topology.events_stream)
    return info.state.first_seq, info.state.last_seq


async def _ordered_subscribe(
    js: JetStreamContext,
    topology: Topology,
    start_seq: int,
    cb: Callable[[Msg], Awaitable[None]] | None = None,
) -> JetStreamContext.PushSubscription:
    return await js.subscribe(
        topology.events_wildcard,
        stream=topology.events_stream,
        cb=cb,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        config=ConsumerConfig(opt_start_seq=max(start_seq, 1)),
        idle_heartbeat=2.0,
    )


class EventFeed:
    def __init__(self, nc: NATS, topology: Topology, hub: Hub) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.topology = topology
        self.hub = hub
        self._sub: JetStreamContext.PushSubscription | None = None
        self._resubscribing: asyncio.Task[None] | None = None

    @property
    def subscribed(self) -> bool:
        return self._sub is not None and self.nc.is_connected

    async def start(self) -> None:
        _, last = await stream_last_seq(self.js, self.topology)
        self.hub.last_seq = last
        await self._subscribe()

    async def _subscribe(self) -> None:
        self._sub = await _ordered_subscribe(self.js, self.topology, self.hub.last_seq + 1, cb=self._on_msg)
        log.info("subscribed to events", extra={"subject": self.topology.events_wildcard, "seq": self.hub.last_seq})

    def resubscribe(self) -> None:
        """Called on NATS reconnect: the broker may have lost the (memory) consumer; start a new one."""
        if self._resubscribing is None or self._resubscribing.done():
            self._resubscribing = asyncio.create_task(self._resubscribe())

    async def _resubscribe(self) -> None:
        backoff = 0.2
        while True:  # runs until it succeeds or the feed stops (the task is cancelled)
            old, self._sub = self._sub, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.unsubscribe()
            try:
                await self._subscribe()
                return
            except Exception as exc:
                log.warning("re-subscribe failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESUBSCRIBE_BACKOFF_MAX_S)

    async def _on_msg(self, msg: Msg) -> None:
        with tracer.start_as_current_span("sync.fanout", context=extract_context(msg.headers)):
            frame = to_frame(msg)
            if frame is None:
                self.hub.last_seq = max(self.hub.last_seq, msg.metadata.sequence.stream)
                return
            self.hub.publish(frame)

    async def stop(self) -> None:
        if self._resubscribing is not None:
            self._resubscribing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resubscribing
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


async def replay(
    js: JetStreamContext, topology: Topology, since: int, until: int, order: str | None, timeout: float
) -> AsyncIterator[Frame]:
    """The frames with ``since < seq <= until`` (for ``order`` only, when given), in stream order.

    It ends at the message ``until`` (or past it, when retention removed it), never on the delivery's
    ``num_pending``: nats-server 2.9 can count it 0 while messages up to ``until`` are still to come, and
    ending there would announce the connection as covered up to ``until`` with events never sent."""
    if until <= since:
        return
    deadline = time.monotonic() + timeout
    sub = await _ordered_subscribe(js, topology, since + 1)
    try:
        while True:
            msg = await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.001))
            seq = msg.metadata.sequence.stream
            if seq > until:
                return
            frame = to_frame(msg)
            if frame is not None and (order is None or frame.order_id == order):
                yield frame
            if seq >= until:
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
