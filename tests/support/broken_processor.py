"""A deliberately broken processor, for proving that the chaos verifier can fail: the real
``fincart-processor`` with exactly one seam replaced, run as a process of the local stack:
``python broken_processor.py MODE`` (``StackConfig.processor_command``).

Modes and the invariant the verifier has to name:

* ``correct``: nothing replaced (the control, so that the harness itself is known to pass).
* ``ignore-timestamp``: orders by arrival instead of the order's ``updated_at``: last arrived wins (I2).
* ``ack-before-commit``: acks a batch before applying it and dies in between (I5 lost).
* ``double-apply``: applies every webhook a second time, as a redelivery without the check would (I4, I5).
* ``skip-events``: never publishes the change event of an order's first version (I6).
* ``no-row-lock``: reads the orders of a batch without ``FOR UPDATE``, so nothing fences two processes that
  both believe they own a partition (a rescale's old and new generation): lost version counts (I4).
* ``no-nats-ping``: nats-py's default liveness check (2 PINGs 120 s apart) instead of FinCart's, so a
  half-open NATS connection (a blackhole) stalls it for minutes (I5: acked webhooks not stored in time).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from fincart_core import streams
from fincart_processor import app, consumer, order_store, runner
from fincart_processor.decisions import Applied, Plan, Stored, Webhook
from fincart_processor.event_publisher import EventPublisher
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

    def plan_applying_twice(webhooks: Sequence[Webhook], stored: Mapping[str, Stored],
                            audited: Mapping[str, int | None]) -> Plan:
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


def no_row_lock() -> None:
    order_store.LOCK_ORDERS = order_store.LOCK_ORDERS.replace("FOR UPDATE", "")


def no_nats_ping() -> None:
    connect = streams.connect

    async def connect_without_liveness(url: str, name: str, **options: object):  # type: ignore[no-untyped-def]
        return await connect(url, name, **{**options, "ping_interval": 120, "max_outstanding_pings": 2})

    runner.connect = connect_without_liveness  # type: ignore[assignment]


MODES: dict[str, Callable[[], None]] = {
    "correct": lambda: None, "ignore-timestamp": ignore_timestamp, "ack-before-commit": ack_before_commit,
    "double-apply": double_apply, "skip-events": skip_events, "no-row-lock": no_row_lock,
    "no-nats-ping": no_nats_ping,
}


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        print(f"usage: broken_processor.py {{{'|'.join(MODES)}}}", file=sys.stderr)
        raise SystemExit(2)
    MODES[sys.argv[1]]()
    app.main()
