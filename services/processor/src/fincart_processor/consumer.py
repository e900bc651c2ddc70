"""One durable pull consumer per owned partition: fetch a batch, apply it, publish events, ack.

nats-py is used directly instead of FastStream's subscribers: a replica creates its partitions'
durable consumers at run time (which partitions depends on FINCART_REPLICAS and the ordinal), a batch
is acked, extended (in_progress) or nak'ed as a whole after the transaction, and before fetching anything
new a consumer re-reads its unacked messages straight from the stream (``_recover``); FastStream's
per-message ack policies and fixed subscriber set express none of that.

Order: a partition is a serial log. Within a batch messages are applied in stream-sequence order; across
a crash or a failed batch, the unacked range (ack floor .. last delivered) is applied again first, so a
webhook never overtakes an older one that was delivered but not acked, and the events of every order are
published in version order (re-applying an already audited webhook only re-publishes its event, which
JetStream dedupes by Nats-Msg-Id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import nats.errors
import nats.js.errors
from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.partition import Topology
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from pydantic import ValidationError

from fincart_processor import metrics
from fincart_processor.decisions import Plan, Webhook
from fincart_processor.event_publisher import EventPublisher
from fincart_processor.order_store import apply_batch, record_failed
from fincart_processor.puller import Puller
from fincart_processor.remote_trace import RemoteTrace, links_recorded
from fincart_processor.settings import ProcessorSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fincart_processor")


@dataclass(frozen=True)
class Delivery:
    """A parsed webhook with the trace context its producer sent."""

    webhook: Webhook
    remote_trace: RemoteTrace


def parse(data: bytes | None) -> Webhook:
    """A stream message -> Webhook; ValidationError/ValueError marks it poison."""
    return Webhook.from_json(data or b"")


class PartitionConsumer:
    def __init__(
        self, partition: int, nc: NATS, js: JetStreamContext, pool: asyncpg.Pool, topology: Topology,
        events: EventPublisher, settings: ProcessorSettings,
    ) -> None:
        self.partition = partition
        self._js, self._pool, self._topology, self._nc = js, pool, topology, nc
        self._events, self._settings = events, settings
        self.subscribed = False

    @property
    def durable(self) -> str:
        return self._topology.consumer_name(self.partition)

    @property
    def subject(self) -> str:
        return self._topology.webhook_subject(self.partition)

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.durable, durable_name=self.durable, filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._settings.ack_wait_s,
            max_deliver=-1,  # transient failures must never exhaust deliveries; poison is counted by us
            # bounds what is in flight, and so what _recover has to re-read after a crash
            max_ack_pending=self._settings.batch_size,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        stream = self._topology.orders_stream
        try:  # created once; a restarted replica keeps its consumer and its ack floor
            await self._js.consumer_info(stream, self.durable)
        except nats.js.errors.NotFoundError:
            await self._js.add_consumer(stream, config=self.consumer_config())
        puller = Puller(self._nc, stream, self.durable)
        await puller.start()
        self.subscribed = True
        needs_recovery = True  # a previous incarnation may have died holding a batch
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

    async def handle(self, msgs: Sequence[Msg]) -> bool:
        """Apply one fetched batch and ack it; False when it was nak'ed after bounded retries."""
        if not msgs:
            return True
        started = time.perf_counter()
        # naks may come back in any order
        positioned = sorted(((ack_position(m), m) for m in msgs), key=lambda pm: pm[0][0])
        parsed: list[tuple[Msg, Delivery]] = []
        poison: list[tuple[Msg, str]] = []
        redelivered: set[str] = set()
        for (_, deliveries), msg in positioned:
            try:
                delivery = Delivery(parse(msg.data), RemoteTrace(msg.headers))
            except (ValidationError, ValueError) as exc:
                poison.append((msg, str(exc)))
                continue
            parsed.append((msg, delivery))
            if deliveries > 1:
                redelivered.add(delivery.webhook.webhook_id)
        metrics.REDELIVERIES.inc(len(redelivered))
        if parsed:
            plan = await self._apply_with_retries([d for _, d in parsed], [m for m, _ in parsed])
            if plan is None:
                for m, _ in parsed:
                    await _quietly(m.nak())
                return False
            for m, _ in parsed:  # an ack is a buffered publish: no task per message needed
                await m.ack()
            # duplicates that came as new stream messages (not counted above) are redeliveries too
            metrics.REDELIVERIES.inc(sum(1 for a in plan.redelivered if a.webhook.webhook_id not in redelivered))
            _count(plan)
        for msg, reason in poison:
            await self._poison(msg, reason)
        metrics.BATCH_SIZE.observe(len(msgs))
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        log.info("batch applied", extra={"partition": self.partition, "batch_size": len(msgs)})
        return True

    async def _apply_with_retries(self, deliveries: Sequence[Delivery], keep_alive: Sequence[Msg] = ()) -> Plan | None:
        """Apply and publish the events; transient errors (DB down, conflict, broker hiccup) are retried with
        backoff a bounded number of times, then None: the caller naks, never ``failed``."""
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
                        plan, events = await apply_batch(conn, webhooks)
                    # each event continues the trace of the webhook that produced it
                    await self._events.publish([(e, traces.get(e.order.last_webhook_id)) for e in events])
                    return plan
                except Exception as exc:  # every failure here is transient: the input parsed
                    span.record_exception(exc)
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
        or that never committed. Their redeliveries later find them audited and only re-publish."""
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
                try:
                    deliveries.append(Delivery(parse(raw.data), RemoteTrace(raw.headers)))
                except (ValidationError, ValueError):
                    continue  # poison: handled when it is delivered again
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("recovery read failed", extra={"partition": self.partition, "error": repr(exc)})
            return False
        if deliveries:
            log.info("re-applying unacked messages", extra={"partition": self.partition, "batch_size": len(deliveries)})
        size = self._settings.batch_size
        for start in range(0, len(deliveries), size):
            plan = await self._apply_with_retries(deliveries[start:start + size])
            if plan is None:
                return False
            _count(plan)
        return True

    async def _poison(self, msg: Msg, reason: str) -> None:
        """An unparseable message: redelivered until max deliveries, then audited ``failed`` and
        dead-lettered (with its original headers) so that nothing is dropped silently."""
        stream_seq, deliveries = ack_position(msg)
        webhook_id = (msg.headers or {}).get("Nats-Msg-Id") or f"seq-{stream_seq}"
        if deliveries < self._settings.max_deliver:
            await _quietly(msg.nak(delay=self._settings.retry_backoff_s))
            return
        try:
            async with self._pool.acquire() as conn:
                await record_failed(conn, webhook_id, _order_id_of(msg.data), reason)
            await self._js.publish(self._topology.dlq_subject, msg.data, headers={
                **(msg.headers or {}), "Nats-Msg-Id": f"dlq:{webhook_id}", "Fincart-Error": reason[:200]})
        except Exception as exc:  # try again on the next delivery
            log.warning("dead-lettering failed", extra={"webhook_id": webhook_id, "error": repr(exc)})
            await _quietly(msg.nak(delay=self._settings.retry_backoff_s))
            return
        await _quietly(msg.term())
        metrics.WEBHOOKS.labels("failed").inc()
        metrics.DEAD_LETTERS.inc()
        log.error("poison message dead-lettered", extra={"webhook_id": webhook_id, "error": reason[:500]})


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


def _order_id_of(data: bytes | None) -> str:
    """Best effort: the order id of a message that failed validation (audit_log needs one)."""
    try:
        return str(WebhookMessage.model_validate_json(data or b"").order.get("id", "unknown")).replace("\x00", "")
    except ValidationError:
        return "unknown"


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up at once on shutdown."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def _quietly(ack: object) -> None:
    try:
        await ack  # type: ignore[misc]
    except nats.errors.Error as exc:  # the message comes back after ack_wait anyway
        log.debug("ack signal failed", extra={"error": repr(exc)})
