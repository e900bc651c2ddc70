"""The consumer of one partition whose lease this replica holds: fetch a batch, apply it, publish events, ack.

nats-py is used directly instead of FastStream's subscribers: a replica creates and stops partition consumers
at run time as it acquires and hands over leases (``ownership``), a batch is acked, extended (in_progress)
or nak'ed as a whole after the transaction, and before fetching anything new a consumer re-reads its unacked
messages straight from the stream (``_recover``); FastStream's per-message ack policies and fixed subscriber
set express none of that.

Order: a partition is a serial log. Within a batch messages are applied in stream-sequence order; across
a crash, a failed batch or a change of owner, the unacked range (ack floor .. last delivered) is applied
again first, so a webhook never overtakes an older one that was delivered but not acked, and the events of
every order are published in version order (re-applying an already audited webhook only re-publishes its
event, which JetStream dedupes by Nats-Msg-Id).

Poison: a message that fails for a reason that will not change (``failures.classify``) is isolated by
splitting its batch in halves until it is alone; the rest is applied in stream order, it is dead-lettered,
and the partition moves on. Only errors that can heal are retried (bounded), then the batch is nak'ed.

Fencing: every batch transaction checks the partition's lease token; when it is gone the batch is rolled
back, nothing is acked and the consumer stops (``LeaseLost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import nats.errors
import nats.js.errors
from fincart_core.partition import Topology
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace

from fincart_processor import metrics
from fincart_processor.dead_letters import DeadLetters
from fincart_processor.decisions import Plan, Webhook
from fincart_processor.event_publisher import EventPublisher
from fincart_processor.failures import Failure, classify
from fincart_processor.lease_store import Fence, LeaseLost
from fincart_processor.order_store import apply_batch
from fincart_processor.puller import Puller
from fincart_processor.remote_trace import RemoteTrace, links_recorded
from fincart_processor.settings import ProcessorSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fincart_processor")


@dataclass(frozen=True)
class Delivery:
    """A parsed webhook with the trace context its producer sent, and the message as it came."""

    webhook: Webhook
    remote_trace: RemoteTrace
    data: bytes
    headers: Mapping[str, str] | None
    stream_seq: int


@dataclass(frozen=True)
class Rejected:
    """A delivery that can never be applied, and why."""

    delivery: Delivery
    reason: str


def parse(data: bytes | None) -> Webhook:
    """A stream message -> Webhook; ValidationError/ValueError marks it poison."""
    return Webhook.from_json(data or b"")


def consumer_config(topology: Topology, partition: int, settings: ProcessorSettings) -> ConsumerConfig:
    durable = topology.consumer_name(partition)
    return ConsumerConfig(
        name=durable, durable_name=durable, filter_subject=topology.webhook_subject(partition),
        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,  # transient failures must never exhaust deliveries; poison is dead-lettered by us
        # bounds what is in flight, and so what _recover has to re-read after a crash
        max_ack_pending=settings.batch_size,
    )


class PartitionConsumer:
    def __init__(
        self, fence: Fence, nc: NATS, js: JetStreamContext, pool: asyncpg.Pool, topology: Topology,
        events: EventPublisher, settings: ProcessorSettings,
    ) -> None:
        self.fence = fence
        self.partition = fence.partition
        self._js, self._pool, self._topology, self._nc = js, pool, topology, nc
        self._events, self._settings = events, settings
        self._dead_letters = DeadLetters(js, pool, topology)
        self.subscribed = False

    @property
    def durable(self) -> str:
        return self._topology.consumer_name(self.partition)

    @property
    def subject(self) -> str:
        return self._topology.webhook_subject(self.partition)

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping`` is set; LeaseLost when a batch found the lease gone (nothing acked)."""
        stream = self._topology.orders_stream
        try:  # created once; a restarted replica keeps its consumer and its ack floor
            await self._js.consumer_info(stream, self.durable)
        except nats.js.errors.NotFoundError:
            await self._js.add_consumer(stream, config=consumer_config(self._topology, self.partition, self._settings))
        puller = Puller(self._nc, stream, self.durable)
        await puller.start()
        self.subscribed = True
        needs_recovery = True  # a previous incarnation or owner may have died holding a batch
        try:
            while not stopping.is_set():
                if needs_recovery:
                    if not await self._recover():
                        await _pause(stopping, self._settings.retry_backoff_s)
                        continue
                    needs_recovery = False
                try:
                    msgs = await puller.fetch(self._settings.batch_size, self._settings.fetch_timeout_s)
                except nats.errors.Error as exc:  # broker restarting: the client reconnects by itself
                    log.warning("fetch failed", extra={"partition": self.partition, "error": repr(exc)})
                    await _pause(stopping, self._settings.retry_backoff_s)
                    continue
                if not await self.handle(msgs):
                    needs_recovery = True
                    await _pause(stopping, self._settings.retry_backoff_s)
        finally:
            self.subscribed = False
            await puller.stop()
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self._nc.flush(timeout=2)  # the last acks are out before the lease is handed over

    async def handle(self, msgs: Sequence[Msg]) -> bool:
        """Apply one fetched batch and ack it; False when it was nak'ed after bounded retries."""
        if not msgs:
            return True
        started = time.perf_counter()
        # naks may come back in any order
        positioned = sorted(((ack_position(m), m) for m in msgs), key=lambda pm: pm[0][0])
        parsed: list[tuple[Msg, Delivery]] = []
        unparsed: list[tuple[Msg, int, str]] = []
        redelivered: set[str] = set()
        for (stream_seq, deliveries), msg in positioned:
            try:
                delivery = Delivery(parse(msg.data), RemoteTrace(msg.headers), msg.data, msg.headers, stream_seq)
            except ValueError as exc:  # pydantic's ValidationError is one
                unparsed.append((msg, stream_seq, str(exc)))
                continue
            parsed.append((msg, delivery))
            if deliveries > 1:
                redelivered.add(delivery.webhook.webhook_id)
        metrics.REDELIVERIES.inc(len(redelivered))
        rejected: list[Rejected] = []
        if parsed:
            try:
                outcome = await self._apply_isolating([d for _, d in parsed], [m for m, _ in parsed])
            except LeaseLost:
                await self._nak_all([m for m, _ in parsed] + [m for m, _, _ in unparsed])
                raise
            if outcome is None:
                await self._nak_all([m for m, _ in parsed] + [m for m, _, _ in unparsed])
                return False
            plans, rejected = outcome
            # duplicates that came as new stream messages (not counted above) are redeliveries too
            metrics.REDELIVERIES.inc(sum(1 for plan in plans for a in plan.redelivered
                                         if a.webhook.webhook_id not in redelivered))
        failed_to_dead_letter = {
            *[seq for msg, seq, reason in unparsed
              if not await self._dead_letters.send(msg.data, msg.headers, seq, reason, "invalid")],
            *[r.delivery.stream_seq for r in rejected if not await self._dead_letter(r)],
        }
        for (stream_seq, _), msg in positioned:  # an ack is a buffered publish: no task per message needed
            if stream_seq in failed_to_dead_letter:
                await _quietly(msg.nak(delay=self._settings.retry_backoff_s))
            else:
                await msg.ack()
        metrics.BATCH_SIZE.observe(len(msgs))
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        log.info("batch applied", extra={"partition": self.partition, "batch_size": len(msgs)})
        return True

    async def _apply_isolating(
        self, deliveries: Sequence[Delivery], keep_alive: Sequence[Msg] = ()
    ) -> tuple[list[Plan], list[Rejected]] | None:
        """Apply ``deliveries`` in stream order, isolating poison: a part that fails for good is split in
        halves, older half first, until the culprit is alone (log2(batch) levels, each part its own
        transaction). Returns the applied parts' plans and the rejected deliveries, or None when a transient
        error outlived its retries (some parts may be applied: their redelivery only re-publishes)."""
        plans: list[Plan] = []
        rejected: list[Rejected] = []
        parts = [list(deliveries)]
        while parts:
            part = parts.pop()
            result = await self._apply_with_retries(part, keep_alive)
            if result is None:
                return None
            if isinstance(result, Plan):
                plans.append(result)
                _count(result)
            elif len(part) == 1:
                rejected.append(Rejected(part[0], result))
            else:
                log.warning("batch rejected, isolating the poison", extra={
                    "partition": self.partition, "batch_size": len(part), "error": result[:500]})
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]  # a stack: the older half comes out first
        return plans, rejected

    async def _apply_with_retries(self, deliveries: Sequence[Delivery], keep_alive: Sequence[Msg]) -> Plan | str | None:
        """Apply and publish the events: the plan; the reason when the input itself is refused (poison); None
        when transient errors (DB down, conflict, broker hiccup) outlived a bounded number of retries with
        backoff. LeaseLost is raised: the partition is no longer ours."""
        webhooks = [d.webhook for d in deliveries]
        traces = {d.webhook.webhook_id: d.remote_trace for d in deliveries}
        links = [trace.Link(span_ctx) for d in deliveries
                 if (span_ctx := trace.get_current_span(d.remote_trace.context).get_span_context()).is_valid
                 ] if links_recorded() else []
        for attempt in range(self._settings.retry_attempts):
            with tracer.start_as_current_span("apply batch", links=links) as span:
                span.set_attributes({"fincart.partition": self.partition, "fincart.batch_size": len(webhooks)})
                try:
                    async with self._pool.acquire() as conn:
                        plan, events = await apply_batch(conn, webhooks, self.fence)
                    # each event continues the trace of the webhook that produced it
                    await self._events.publish([(e, traces.get(e.order.last_webhook_id)) for e in events])
                    return plan
                except LeaseLost:
                    raise
                except Exception as exc:
                    span.record_exception(exc)
                    if classify(exc) is Failure.POISON:
                        return f"{type(exc).__name__}: {exc}"
                    metrics.TRANSIENT_ERRORS.inc()
                    log.warning("batch failed, retrying", extra={
                        "partition": self.partition, "batch_size": len(webhooks), "attempt": attempt + 1,
                        "error": repr(exc)})
            for m in keep_alive:
                await _quietly(m.in_progress())
            await asyncio.sleep(self._settings.retry_backoff_s * 2**attempt)
        return None

    async def _recover(self) -> bool:
        """Apply the partition's delivered-but-unacked messages, read straight from the stream, before
        anything newer: they may belong to a batch that committed but died before its events went out,
        or that never committed. Their redeliveries later find them audited and only re-publish (or, for
        poison, find them audited ``failed``)."""
        stream = self._topology.orders_stream
        try:
            info = await self._js.consumer_info(stream, self.durable)
            first, last = info.ack_floor.stream_seq + 1, info.delivered.stream_seq
            deliveries: list[Delivery] = []
            seq = first
            while seq <= last:
                try:
                    raw = await self._js.get_msg(stream, seq=seq, subject=self.subject, next=True)
                except nats.js.errors.NotFoundError:
                    break
                if raw.seq is None or raw.seq > last:
                    break
                seq = raw.seq + 1
                data = raw.data or b""
                try:
                    deliveries.append(Delivery(parse(data), RemoteTrace(raw.headers), data, raw.headers, raw.seq))
                except ValueError:
                    continue  # not a webhook: dead-lettered when it is delivered again
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("recovery read failed", extra={"partition": self.partition, "error": repr(exc)})
            return False
        if deliveries:
            log.info("re-applying unacked messages", extra={"partition": self.partition, "batch_size": len(deliveries)})
        size = self._settings.batch_size
        for start in range(0, len(deliveries), size):
            outcome = await self._apply_isolating(deliveries[start:start + size])
            if outcome is None:
                return False
            for rejected in outcome[1]:
                if not await self._dead_letter(rejected):
                    return False
        return True

    async def _dead_letter(self, rejected: Rejected) -> bool:
        d = rejected.delivery
        return await self._dead_letters.send(d.data, d.headers, d.stream_seq, rejected.reason, "rejected",
                                             d.webhook.webhook_id, d.webhook.order_id)

    async def _nak_all(self, msgs: Sequence[Msg]) -> None:
        for m in msgs:
            await _quietly(m.nak())



def ack_position(msg: Msg) -> tuple[int, int]:
    """(stream sequence, number of deliveries) of a JetStream message, read from its ack subject (v1 or v2
    format) as ``Msg.metadata`` reads them, without its timestamp and dataclasses (~2 us a message)."""
    tokens = msg.reply.split(".") if msg.reply else []
    if len(tokens) >= 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
            return int(tokens[5]), int(tokens[4])
        if len(tokens) >= 11:  # $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>...
            return int(tokens[7]), int(tokens[6])
    raise nats.errors.NotJSMessageError


def _count(plan: Plan) -> None:
    processed = sum(1 for _, status, _ in plan.audit if status == "processed")
    metrics.WEBHOOKS.labels("processed").inc(processed)
    metrics.WEBHOOKS.labels("discarded").inc(len(plan.audit) - processed)
    for w, status, version in plan.audit:
        log.debug("webhook %s", status, extra={
            "webhook_id": w.webhook_id, "order_id": w.order_id, "status": status, "version": version})


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up at once on shutdown."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def _quietly(ack: object) -> None:
    try:
        await ack  # type: ignore[misc]
    except nats.errors.Error as exc:  # the message comes back after ack_wait anyway
        log.debug("ack signal failed", extra={"error": repr(exc)})
