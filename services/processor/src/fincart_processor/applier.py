"""Applying deliveries of one partition: a fenced transaction per batch, the change events published after
commit, errors that can heal retried (bounded), and poison isolated by splitting the batch in halves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg
from nats.aio.msg import Msg
from opentelemetry import trace

from fincart_processor import metrics
from fincart_processor.decisions import Plan, Webhook
from fincart_processor.event_publisher import EventPublisher
from fincart_processor.failures import Failure, classify, timed_out
from fincart_processor.lease_store import Fence, LeaseLost
from fincart_processor.order_store import apply_batch
from fincart_processor.puller import quietly
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


class BatchApplier:
    def __init__(self, fence: Fence, pool: asyncpg.Pool, events: EventPublisher, settings: ProcessorSettings) -> None:
        self._fence, self._pool, self._events, self._settings = fence, pool, events, settings

    async def apply(
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
            result = await self._attempt(part, keep_alive)
            if result is None:
                return None
            if isinstance(result, Plan):
                plans.append(result)
                _count(result)
            elif len(part) == 1:
                rejected.append(Rejected(part[0], result))
            else:
                log.warning(
                    "batch rejected, isolating the poison",
                    extra={"partition": self._fence.partition, "batch_size": len(part), "error": result[:500]},
                )
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]  # a stack: the older half comes out first
        return plans, rejected

    async def _attempt(self, deliveries: Sequence[Delivery], keep_alive: Sequence[Msg]) -> Plan | str | None:
        """Apply and publish the events: the plan; the reason when the input itself is refused (poison); None
        when transient errors (DB down, conflict, broker hiccup) outlived a bounded number of retries with
        backoff. LeaseLost is raised: the partition is no longer ours."""
        webhooks = [d.webhook for d in deliveries]
        traces = {d.webhook.webhook_id: d.remote_trace for d in deliveries}
        links = (
            [
                trace.Link(span_ctx)
                for d in deliveries
                if (span_ctx := trace.get_current_span(d.remote_trace.context).get_span_context()).is_valid
            ]
            if links_recorded()
            else []
        )
        for attempt in range(self._settings.retry_attempts):
            with tracer.start_as_current_span("apply batch", links=links) as span:
                span.set_attributes({"fincart.partition": self._fence.partition, "fincart.batch_size": len(webhooks)})
                try:
                    async with self._pool.acquire(timeout=self._settings.db_acquire_timeout_s) as conn:
                        plan, events = await apply_batch(conn, webhooks, self._fence)
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
                    if timed_out(exc):
                        metrics.DB_TIMEOUTS.labels("batch").inc()
                    log.warning(
                        "batch failed, retrying",
                        extra={
                            "partition": self._fence.partition,
                            "batch_size": len(webhooks),
                            "attempt": attempt + 1,
                            "error": repr(exc),
                        },
                    )
            for m in keep_alive:
                await quietly(m.in_progress())
            await asyncio.sleep(self._settings.retry_backoff_s * 2**attempt)
        return None


def _count(plan: Plan) -> None:
    processed = sum(1 for _, status, _ in plan.audit if status == "processed")
    metrics.WEBHOOKS.labels("processed").inc(processed)
    metrics.WEBHOOKS.labels("discarded").inc(len(plan.audit) - processed)
    for w, status, version in plan.audit:
        log.debug(
            "webhook %s",
            status,
            extra={"webhook_id": w.webhook_id, "order_id": w.order_id, "status": status, "version": version},
        )
