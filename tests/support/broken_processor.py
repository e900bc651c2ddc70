"""A deliberately broken processor, for proving that the chaos verifier can fail: the real
``fincart-processor`` with exactly one seam replaced, run as a process of the local stack:
``python broken_processor.py MODE`` (``StackConfig.processor_command``).

Modes and the invariant the verifier has to name:

* ``correct``: nothing replaced (the control, so that the harness itself is known to pass).
* ``ignore-timestamp``: orders by arrival instead of the order's ``updated_at``: last arrived wins (I2).
* ``ack-before-commit``: acks a batch before applying it and dies in between (I5 lost).
* ``double-apply``: applies every webhook a second time, as a redelivery without the check would (I4, I5).
* ``skip-events``: never publishes the change event of an order's first version (I6).
* ``tie-by-arrival``: on equal ``updated_at`` the later arrival wins instead of the greater webhook id (I2).
* ``fee-tier-inclusive``: the processor's fee tiers include their upper bound (50.00 pays 9.99): its use of
  the domain rule is wrong, the verifier's expectation is not (I2 shipping_fee; the events carry it too: I6).
* ``total-price-kept``: the upsert forgets to update ``total_price`` (I2 total_price).
* ``event-per-webhook``: publishes an event for every webhook of a batch, discarded ones too, deduped per
  webhook instead of per version (I6: events for discarded webhooks).
* ``publish-before-commit``: publishes the events inside the transaction, before it commits (I6: a
  client reading the order on the event finds the older version).
* ``crash-after-commit``: dies once right after its first batch committed, before the events and the ack,
  so that the batch is redelivered on purpose; otherwise correct (the control of the next mode).
* ``crash-after-commit-no-republish``: the same crash, and a redelivered, already applied webhook's event
  is not published again (I6: the versions of the crashed batch never reach a client).
* ``poison-forever``: never dead-letters a poison message, naks it forever (its order's partition
  keeps retrying it: I3, accepted poison never dead-lettered).
* ``unfenced-handover``: ignores the leases: every replica consumes every partition (no lease check, no
  handover, no order row lock), so with two or more replicas (only a rescale makes them during the load)
  two consumers apply the same partition at once: lost version counts (I4). One replica alone is correct.
* ``no-nats-ping``: nats-py's default liveness check (2 PINGs 120 s apart) instead of FinCart's, so a
  half-open NATS connection (a blackhole) stalls it for minutes (I5: acked webhooks not stored in time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg
from fincart_core import domain, streams
from fincart_core.contracts.events import OrderEvent
from fincart_processor import app, applier, consumer, decisions, order_store, ownership, runner
from fincart_processor.dead_letters import DeadLetters
from fincart_processor.decisions import Applied, Plan, Stored, Webhook
from fincart_processor.event_publisher import EventPublisher
from fincart_processor.lease_store import Fence, Round
from nats.aio.msg import Msg

RESTARTED = "FINCART_BROKEN_RESTARTED"


def ignore_timestamp() -> None:
    parse = consumer.parse

    def parse_by_arrival(data: bytes | None) -> Webhook:
        # ingest's receive time replaces updated_at, so both the decision and the SQL guard see arrival order
        webhook = parse(data)
        return dataclasses.replace(webhook, updated_at=webhook.received_at)

    consumer.parse = parse_by_arrival


def ack_before_commit() -> None:
    handle = consumer.PartitionConsumer.handle

    async def ack_then_die(self: consumer.PartitionConsumer, msgs: Sequence[Msg]) -> bool:
        if not msgs or os.environ.get(RESTARTED):
            return await handle(self, msgs)
        for msg in msgs:
            await msg.ack_sync()  # confirmed by JetStream: a buffered ack could die with the process
        # Dies before the transaction: exec drops every connection, task and open transaction like a
        # SIGKILL and starts the processor again in the same process (same pid, so the stack still owns
        # it). Once only: the first non-empty batch of this run is the one acked and never committed.
        print(f"broken processor: acked {len(msgs)} messages, dying before the commit", file=sys.stderr, flush=True)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, RESTARTED: "1"})

    consumer.PartitionConsumer.handle = ack_then_die  # type: ignore[method-assign]


def double_apply() -> None:
    # JetStream delivers at least once, but redeliveries come only after crashes and ack timeouts, which
    # a short run does not produce on cue. So every delivery counts as two: each processed webhook is
    # applied once more right after itself (the version goes up twice, an event for each), which is what
    # a processor without the redelivery check and the strict (updated_at, id) guard does on a redelivery.
    plan_batch = order_store.plan_batch

    def plan_applying_twice(
        webhooks: Sequence[Webhook], stored: Mapping[str, Stored], audited: Mapping[str, int | None]
    ) -> Plan:
        plan = plan_batch(webhooks, stored, audited)
        again: Counter[str] = Counter()
        applied = []
        for a in plan.applied:
            version = a.version + again[a.webhook.order_id]
            applied += [Applied(a.webhook, version), Applied(a.webhook, version + 1)]
            again[a.webhook.order_id] += 1
        return dataclasses.replace(plan, applied=applied)

    order_store.plan_batch = plan_applying_twice


def skip_events() -> None:
    publish = EventPublisher.publish

    async def publish_updates_only(self: EventPublisher, events: Sequence[tuple]) -> None:  # type: ignore[type-arg]
        await publish(self, [(event, context) for event, context in events if event.order.version != 1])

    EventPublisher.publish = publish_updates_only  # type: ignore[method-assign]


def tie_by_arrival() -> None:
    def later_arrival_wins(updated_at: datetime, webhook_id: str, stored_at: datetime, stored_id: str) -> bool:
        return updated_at >= stored_at

    decisions.supersedes = later_arrival_wins
    # the store's guard agrees with the decision (else the upsert would refuse and the batch retry)
    order_store.UPSERT_ORDERS = order_store.UPSERT_ORDERS.replace(
        """WHERE (excluded.last_external_updated_at, excluded.last_webhook_id COLLATE "C")
    > (orders.last_external_updated_at, orders.last_webhook_id COLLATE "C")""",
        "WHERE excluded.last_external_updated_at >= orders.last_external_updated_at",
    )


def fee_tier_inclusive() -> None:
    def fee(total_price: Decimal | None) -> Decimal:
        total = total_price if total_price is not None else Decimal("0")
        return next((fee for bound, fee in domain.SHIPPING_TIERS if total <= bound), domain.FREE_SHIPPING)

    decisions.shipping_fee = fee


def total_price_kept() -> None:
    order_store.UPSERT_ORDERS = order_store.UPSERT_ORDERS.replace("total_price = excluded.total_price, ", "")


def event_per_webhook() -> None:
    apply_batch = applier.apply_batch

    async def with_discarded(
        conn: asyncpg.Connection, webhooks: Sequence[Webhook], fence: Fence | None
    ) -> tuple[Plan, list[OrderEvent]]:
        plan, events = await apply_batch(conn, webhooks, fence)
        latest = {e.order.shopify_order_id: e for e in events}
        for w, status, _ in plan.audit:
            if status == "discarded" and w.order_id in latest:  # "the order was touched": its state, this webhook
                order = latest[w.order_id].order.model_copy(update={"last_webhook_id": w.webhook_id})
                events.append(OrderEvent(order=order))
        return plan, events

    applier.apply_batch = with_discarded
    # one event per webhook: deduped by the webhook id instead of the version
    OrderEvent.msg_id = property(lambda self: f"{self.order.shopify_order_id}:{self.order.last_webhook_id}")  # type: ignore[method-assign,assignment]


def publish_before_commit() -> None:
    publishers: list[EventPublisher] = []
    start = EventPublisher.start

    async def remember(self: EventPublisher) -> None:
        await start(self)
        publishers.append(self)

    apply_batch = applier.apply_batch

    async def publish_then_commit(
        conn: asyncpg.Connection, webhooks: Sequence[Webhook], fence: Fence | None
    ) -> tuple[Plan, list]:  # type: ignore[type-arg]
        async with conn.transaction():  # the real transaction becomes a savepoint of this one
            plan, events = await apply_batch(conn, webhooks, fence)
            await publishers[0].publish([(e, None) for e in events])
            await asyncio.sleep(COMMIT_DELAY_S)  # the commit takes a moment (as under load): readers see the old row
        return plan, []

    EventPublisher.start = remember  # type: ignore[method-assign]
    applier.apply_batch = publish_then_commit


def crash_after_commit(republish: bool = True) -> Callable[[], None]:
    def plant() -> None:
        apply_batch = applier.apply_batch

        async def commit_then_die(
            conn: asyncpg.Connection, webhooks: Sequence[Webhook], fence: Fence | None
        ) -> tuple[Plan, list]:  # type: ignore[type-arg]
            plan, events = await apply_batch(conn, webhooks, fence)
            if not os.environ.get(RESTARTED) and plan.applied:
                print(
                    f"broken processor: committed {len(plan.applied)} versions, dying before their events and the ack",
                    file=sys.stderr,
                    flush=True,
                )
                os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, RESTARTED: "1"})
            if not republish:  # the bug: a redelivered, already applied webhook gets no event again
                redelivered = {(a.webhook.order_id, a.version) for a in plan.redelivered}
                events = [e for e in events if (e.order.shopify_order_id, e.order.version) not in redelivered]
            return plan, events

        applier.apply_batch = commit_then_die

    return plant


def poison_forever() -> None:
    async def never(self: DeadLetters, *args: object, **kwargs: object) -> bool:
        # "failed to dead-letter": the consumer naks the message (and its recovery retries it) for ever
        return False

    DeadLetters.send = never  # type: ignore[method-assign]


COMMIT_DELAY_S = 0.5


def unfenced_handover() -> None:
    async def no_check(self: Fence, conn: asyncpg.Connection) -> None:
        return None

    lease_round = ownership.lease_round

    async def hold_everything(conn: asyncpg.Connection, partitions: int, me: str, ttl_s: float) -> Round:
        await lease_round(conn, partitions, me, ttl_s)  # still heartbeats (the others count it live)
        # every partition held under one fixed token (so consumers are never restarted), none handed over
        return Round(held=dict.fromkeys(range(partitions), 0), release=[])

    Fence.check = no_check  # type: ignore[method-assign]
    ownership.lease_round = hold_everything  # type: ignore[assignment]
    order_store.LOCK_ORDERS = order_store.LOCK_ORDERS.replace("FOR UPDATE", "")


def no_nats_ping() -> None:
    connect = streams.connect

    async def connect_without_liveness(url: str, name: str, **options: object):  # type: ignore[no-untyped-def]
        return await connect(url, name, **{**options, "ping_interval": 120, "max_outstanding_pings": 2})

    runner.connect = connect_without_liveness  # type: ignore[assignment]


MODES: dict[str, Callable[[], None]] = {
    "correct": lambda: None,
    "ignore-timestamp": ignore_timestamp,
    "ack-before-commit": ack_before_commit,
    "double-apply": double_apply,
    "skip-events": skip_events,
    "tie-by-arrival": tie_by_arrival,
    "fee-tier-inclusive": fee_tier_inclusive,
    "total-price-kept": total_price_kept,
    "event-per-webhook": event_per_webhook,
    "publish-before-commit": publish_before_commit,
    "crash-after-commit": crash_after_commit(),
    "crash-after-commit-no-republish": crash_after_commit(False),
    "poison-forever": poison_forever,
    "unfenced-handover": unfenced_handover,
    "no-nats-ping": no_nats_ping,
}


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        print(f"usage: broken_processor.py {{{'|'.join(MODES)}}}", file=sys.stderr)
        raise SystemExit(2)
    MODES[sys.argv[1]]()
    app.main()
