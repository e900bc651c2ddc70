"""The consumer of one partition whose lease this replica holds: fetch a batch, apply it, publish events, ack.

nats-py is used directly instead of FastStream's subscribers: a replica creates and stops partition consumers
at run time as it acquires and hands over leases (``ownership``), a batch is acked (with AckAll: one ack of
its last message), extended (in_progress) or nak'ed as a whole after the transaction, and before fetching
anything new a consumer re-reads its unacked messages straight from the stream (``_recover``); FastStream's
per-message ack policies and fixed subscriber set express none of that.

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
from dataclasses import replace

import asyncpg
import nats.errors
import nats.js.errors
from fincart_core.partition import Topology
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from fincart_processor import metrics
from fincart_processor.applier import BatchApplier, Delivery, Rejected
from fincart_processor.dead_letters import DeadLetters
from fincart_processor.decisions import Webhook
from fincart_processor.event_publisher import EventPublisher
from fincart_processor.lease_store import Fence, LeaseLost
from fincart_processor.puller import Puller, ack_position, quietly
from fincart_processor.remote_trace import RemoteTrace
from fincart_processor.settings import ProcessorSettings

log = logging.getLogger(__name__)


def parse(data: bytes | None) -> Webhook:
    """A stream message -> Webhook; ValidationError/ValueError marks it poison."""
    return Webhook.from_json(data or b"")


def consumer_config(topology: Topology, partition: int, settings: ProcessorSettings) -> ConsumerConfig:
    durable = topology.consumer_name(partition)
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=topology.webhook_subject(partition),
        ack_policy=AckPolicy(settings.ack_policy),
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,  # transient failures must never exhaust deliveries; poison is dead-lettered by us
        # bounds what is in flight, and so what _recover has to re-read after a crash
        max_ack_pending=settings.batch_size,
    )


class PartitionConsumer:
    def __init__(
        self,
        fence: Fence,
        nc: NATS,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        topology: Topology,
        events: EventPublisher,
        settings: ProcessorSettings,
    ) -> None:
        self.fence = fence
        self.partition = fence.partition
        self._js, self._topology, self._nc, self._settings = js, topology, nc, settings
        self._dead_letters = DeadLetters(js, pool, topology, settings.db_acquire_timeout_s)
        self._applier = BatchApplier(fence, pool, events, settings)
        self._ack_all = settings.ack_policy == "all"
        self._recreate_at: int | None = None  # set while the consumer is being recreated (_ensure_consumer)
        self.subscribed = False

    @property
    def durable(self) -> str:
        return self._topology.consumer_name(self.partition)

    @property
    def subject(self) -> str:
        return self._topology.webhook_subject(self.partition)

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping`` is set; LeaseLost when a batch found the lease gone (nothing acked)."""
        await self._ensure_consumer()
        puller = Puller(self._nc, self._topology.orders_stream, self.durable)
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
                outcome = await self._applier.apply([d for _, d in parsed], [m for m, _ in parsed])
            except LeaseLost:
                await self._nak_all([m for m, _ in parsed] + [m for m, _, _ in unparsed])
                raise
            if outcome is None:
                await self._nak_all([m for m, _ in parsed] + [m for m, _, _ in unparsed])
                return False
            plans, rejected = outcome
            # duplicates that came as new stream messages (not counted above) are redeliveries too
            metrics.REDELIVERIES.inc(
                sum(1 for plan in plans for a in plan.redelivered if a.webhook.webhook_id not in redelivered)
            )
        failed_to_dead_letter = {
            *[
                seq
                for msg, seq, reason in unparsed
                if not await self._dead_letters.send(msg.data, msg.headers, seq, reason, "invalid")
            ],
            *[r.delivery.stream_seq for r in rejected if not await self._dead_letter(r)],
        }
        # With AckAll an ack covers every message before it: a message whose dead-lettering failed is nak'ed
        # with all after it, and the batch fails, so that _recover dead-letters it before anything newer is
        # fetched and acked (the messages after it were applied: coming back, they only re-publish).
        done = next((i for i, ((seq, _), _) in enumerate(positioned) if seq in failed_to_dead_letter), len(msgs))
        await self._ack([m for _, m in positioned[:done]])
        await self._nak_all([m for _, m in positioned[done:]])
        metrics.BATCH_SIZE.observe(len(msgs))
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        log.info("batch applied", extra={"partition": self.partition, "batch_size": len(msgs)})
        return done == len(msgs)

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
            invalid: list[tuple[bytes, Mapping[str, str] | None, int, str]] = []
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
                except ValueError as exc:  # dead-lettered here: with AckAll, the next ack may cover it
                    invalid.append((data, raw.headers, raw.seq, str(exc)))
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("recovery read failed", extra={"partition": self.partition, "error": repr(exc)})
            return False
        if deliveries:
            log.info("re-applying unacked messages", extra={"partition": self.partition, "batch_size": len(deliveries)})
        size = self._settings.batch_size
        for start in range(0, len(deliveries), size):
            outcome = await self._applier.apply(deliveries[start : start + size])
            if outcome is None:
                return False
            for rejected in outcome[1]:
                if not await self._dead_letter(rejected):
                    return False
        for data, headers, stream_seq, reason in invalid:
            if not await self._dead_letters.send(data, headers, stream_seq, reason, "invalid"):
                return False
        return True

    async def _ensure_consumer(self) -> None:
        """Create the partition's durable consumer once (a restarted replica keeps it and its ack floor), or
        recreate it when its ack policy is not the configured one, which JetStream cannot change: the new one
        starts after the old one's ack floor, so the old unacked range is delivered first, in stream order,
        before anything newer, as ``_recover`` would re-apply it."""
        stream = self._topology.orders_stream
        config = consumer_config(self._topology, self.partition, self._settings)
        try:
            info = await self._js.consumer_info(stream, self.durable)
            if info.config.ack_policy == config.ack_policy:
                return
            self._recreate_at = info.ack_floor.stream_seq + 1
            log.warning(
                "recreating the consumer with another ack policy",
                extra={
                    "partition": self.partition,
                    "ack_policy": self._settings.ack_policy,
                    "stream_seq": self._recreate_at,
                },
            )
            await self._js.delete_consumer(stream, self.durable)
        except nats.js.errors.NotFoundError:
            pass
        if self._recreate_at is not None:  # also when a create after our delete failed and is retried
            config = replace(config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._recreate_at)
        await self._js.add_consumer(stream, config=config)
        self._recreate_at = None

    async def _dead_letter(self, rejected: Rejected) -> bool:
        d = rejected.delivery
        return await self._dead_letters.send(
            d.data, d.headers, d.stream_seq, rejected.reason, "rejected", d.webhook.webhook_id, d.webhook.order_id
        )

    async def _ack(self, msgs: Sequence[Msg]) -> None:
        """Ack applied messages (in stream order): with AckAll the last one acks them all. An ack is a buffered
        publish: no task per message."""
        for m in msgs[-1:] if self._ack_all else msgs:
            await m.ack()

    async def _nak_all(self, msgs: Sequence[Msg]) -> None:
        for m in msgs:
            await quietly(m.nak())


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up at once on shutdown."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
