"""One durable pull consumer per owned partition: fetch a batch, apply it, publish events, ack.

nats-py is used directly instead of FastStream's subscribers: a replica creates its partitions'
durable consumers at run time (which partitions depends on FINCART_REPLICAS and the ordinal), and
a batch is acked, extended (in_progress) or nak'ed as a whole after the transaction, which
FastStream's per-message ack policies do not express.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
import nats.errors
from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.partition import Topology
from fincart_core.telemetry import extract_context
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from pydantic import ValidationError

from fincart_processor import metrics
from fincart_processor.decisions import Webhook
from fincart_processor.event_publisher import EventPublisher
from fincart_processor.order_store import apply_batch, record_failed
from fincart_processor.settings import ProcessorSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fincart_processor")
NAK_DELAY_S = 2.0


class PartitionConsumer:
    def __init__(
        self, partition: int, js: JetStreamContext, pool: asyncpg.Pool, topology: Topology,
        events: EventPublisher, settings: ProcessorSettings,
    ) -> None:
        self.partition = partition
        self._js, self._pool, self._topology = js, pool, topology
        self._events, self._settings = events, settings
        self.subscribed = False

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self._topology.consumer_name(self.partition),
            filter_subject=self._topology.webhook_subject(self.partition),
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._settings.ack_wait_s,
            max_deliver=-1,  # transient failures must never exhaust deliveries; poison is counted by us
            # One batch in flight at most: after a crash, nothing newer is delivered until the unacked batch
            # comes back (after ack_wait), so events stay in version order even when a batch committed
            # but died before publishing its events.
            max_ack_pending=self._settings.batch_size,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        config = self.consumer_config()
        sub = await self._js.pull_subscribe(
            config.filter_subject or "", durable=config.durable_name, stream=self._topology.orders_stream,
            config=config,
        )
        self.subscribed = True
        try:
            while not stopping.is_set():
                try:
                    msgs = await sub.fetch(self._settings.batch_size, timeout=self._settings.fetch_timeout_s)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.Error as exc:  # broker restarting: the client reconnects by itself
                    log.warning("fetch failed", extra={"partition": self.partition, "error": repr(exc)})
                    await asyncio.sleep(self._settings.retry_backoff_s)
                    continue
                await self.handle(msgs)
        finally:
            self.subscribed = False

    async def handle(self, msgs: Sequence[Msg]) -> None:
        started = time.perf_counter()
        parsed: list[tuple[Msg, Webhook]] = []
        poison: list[tuple[Msg, str]] = []
        for msg in msgs:
            if msg.metadata.num_delivered > 1:
                metrics.REDELIVERIES.inc()
            try:
                parsed.append((msg, Webhook.from_message(WebhookMessage.model_validate_json(msg.data))))
            except (ValidationError, ValueError) as exc:
                poison.append((msg, str(exc)))
        contexts = {w.webhook_id: extract_context(m.headers) for m, w in parsed}
        links = [trace.Link(span_ctx) for ctx in contexts.values()
                 if (span_ctx := trace.get_current_span(ctx).get_span_context()).is_valid]
        with tracer.start_as_current_span("apply batch", links=links) as span:
            span.set_attributes({"fincart.partition": self.partition, "fincart.batch_size": len(msgs)})
            if parsed and not await self._apply_with_retries(parsed, contexts):
                return
            for msg, reason in poison:
                await self._poison(msg, reason)
        metrics.BATCH_SIZE.observe(len(msgs))
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)

    async def _apply_with_retries(self, parsed: list[tuple[Msg, Webhook]], contexts: dict[str, object]) -> bool:
        """Apply, publish events, ack. Transient errors are retried with backoff (bounded), then the batch
        is nak'ed for JetStream to redeliver later: never ``failed``."""
        webhooks = [w for _, w in parsed]
        for attempt in range(self._settings.retry_attempts):
            try:
                async with self._pool.acquire() as conn:
                    plan, events = await apply_batch(conn, webhooks)
                await self._events.publish([(e, contexts.get(e.order.last_webhook_id)) for e in events])
            except Exception as exc:  # DB down, conflict, broker hiccup: all transient here
                metrics.TRANSIENT_ERRORS.inc()
                log.warning("batch failed, retrying", extra={
                    "partition": self.partition, "batch_size": len(parsed), "error": repr(exc)})
                await asyncio.gather(*(_quietly(m.in_progress()) for m, _ in parsed))
                await asyncio.sleep(self._settings.retry_backoff_s * 2**attempt)
                continue
            await asyncio.gather(*(m.ack() for m, _ in parsed))
            processed = sum(1 for _, status, _ in plan.audit if status == "processed")
            metrics.WEBHOOKS.labels("processed").inc(processed)
            metrics.WEBHOOKS.labels("discarded").inc(len(plan.audit) - processed)
            metrics.REDELIVERIES.inc(len(plan.redelivered))
            for w, status, version in plan.audit:
                log.debug("webhook %s", status, extra={
                    "webhook_id": w.webhook_id, "order_id": w.order_id, "status": status, "version": version})
            log.info("batch applied", extra={"partition": self.partition, "batch_size": len(parsed)})
            return True
        await asyncio.gather(*(_quietly(m.nak(delay=NAK_DELAY_S)) for m, _ in parsed))
        return False

    async def _poison(self, msg: Msg, reason: str) -> None:
        """An unparseable message: redelivered until max deliveries, then audited ``failed`` and
        dead-lettered (with its original headers) so that nothing is dropped silently."""
        webhook_id = (msg.headers or {}).get("Nats-Msg-Id") or f"seq-{msg.metadata.sequence.stream}"
        if msg.metadata.num_delivered < self._settings.max_deliver:
            await _quietly(msg.nak(delay=NAK_DELAY_S / 4))
            return
        try:
            async with self._pool.acquire() as conn:
                await record_failed(conn, webhook_id, _order_id_of(msg.data), reason)
            await self._js.publish(self._topology.dlq_subject, msg.data, headers={
                **(msg.headers or {}), "Nats-Msg-Id": f"dlq:{webhook_id}", "Fincart-Error": reason[:200]})
        except Exception as exc:  # try again on the next delivery
            log.warning("dead-lettering failed", extra={"webhook_id": webhook_id, "error": repr(exc)})
            await _quietly(msg.nak(delay=NAK_DELAY_S))
            return
        await msg.term()
        metrics.WEBHOOKS.labels("failed").inc()
        metrics.DEAD_LETTERS.inc()
        log.error("poison message dead-lettered", extra={"webhook_id": webhook_id, "error": reason[:500]})


def _order_id_of(data: bytes) -> str:
    """Best effort: the order id of a message that failed validation (audit_log needs one)."""
    try:
        return str(WebhookMessage.model_validate_json(data).order.get("id", "unknown"))
    except ValidationError:
        return "unknown"


async def _quietly(ack: object) -> None:
    try:
        await ack  # type: ignore[misc]
    except nats.errors.Error as exc:  # the message comes back after ack_wait anyway
        log.debug("ack signal failed", extra={"error": repr(exc)})
