"""AckAll (FINCART_ACK_POLICY=all, not the default; real NATS JetStream and PostgreSQL): one ack per batch
also acks every earlier message of the partition, so nothing may be acked past a message that was not applied
or dead-lettered; consumers left with per-message acks are recreated at their ack floor."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from fincart_processor.consumer import consumer_config, parse
from fincart_processor.order_store import apply_batch
from fincart_processor.runner import Processor
from nats.js.api import AckPolicy

from tests.integration.test_processor_poison import (
    dead_letters,
    expected_final,
    orders_of,
    publish_update,
    refused_by_the_database,
    updates_of,
)
from tests.integration.test_processor_service import (
    WAIT_S,
    _eq,
    audit_count,
    check_history,
    settings_for,
    wait_until,
)
from tests.support.webhooks import BASE, order_payload, publish_webhook


@pytest.mark.parametrize("committed", [True, False], ids=["died-after-commit", "died-before-commit"])
async def test_poison_in_a_batch_held_by_a_dead_processor(infra, database_url, topology, js, db, committed):
    """A processor died holding a batch with a refused and an unparseable message in its middle (after
    committing the rest of it, or before). Its successor re-applies the range once and dead-letters both before
    it fetches anything newer, whose ack covers the range well within ack_wait (no redelivery comes to the
    rescue): nothing lost, audit and events as one by one in stream order, each poison dead-lettered once."""
    partition = 1
    orders = orders_of(topology, partition, 3, "held")
    sends = updates_of(orders, 6, random.Random(3))
    refused, unparseable = refused_by_the_database("held"), "held-not-json"
    ids = [await publish_update(js, topology, o, i) for o, i in sends[:6]]
    await publish_webhook(js, topology, order_payload(orders[0], 99, BASE + timedelta(days=1)), refused)
    await js.publish(topology.webhook_subject(partition), b'{"webhook_id": ', headers={"Nats-Msg-Id": unparseable})
    ids += [await publish_update(js, topology, o, i) for o, i in sends[6:12]]
    settings = settings_for(infra, database_url, topology, batch_size=20, ack_wait_s=60.0, ack_policy="all")
    config = consumer_config(topology, partition, settings)
    assert config.ack_policy == AckPolicy.ALL
    sub = await js.pull_subscribe(
        config.filter_subject or "", durable=config.durable_name, stream=topology.orders_stream, config=config
    )
    held = await sub.fetch(14, timeout=5)
    assert len(held) == 14
    if committed:
        await apply_batch(
            db, [parse(m.data) for m in held if m.headers["Nats-Msg-Id"] not in (refused, unparseable)], None
        )
    await sub.unsubscribe()  # no ack, no events, no dead letters: what SIGKILL leaves behind
    ids += [await publish_update(js, topology, o, i) for o, i in sends[12:]]  # newer than the held batch
    processor = Processor(settings)
    await processor.start()
    try:
        await wait_until(lambda: _eq(audit_count(db), len(sends) + 2), what="all audited")
        await processor.wait_drained(WAIT_S)
    finally:
        await processor.stop()
    info = await js.consumer_info(topology.orders_stream, config.durable_name)
    assert info.num_redelivered == 0, "the held range must be covered by a later ack, not redelivered"
    assert set(await dead_letters(js, topology)) == {f"dlq:{refused}"[:504], f"dlq:{unparseable}"}
    assert (await js.stream_info(topology.dlq_stream)).state.messages == 2
    await check_history(db, js, topology, expected_final(ids), failed=[refused, unparseable])


async def test_a_consumer_with_per_message_acks_is_recreated_at_its_ack_floor(infra, database_url, topology, js, db):
    """Upgrade: a replica with FINCART_ACK_POLICY=explicit drained part of a partition, then another was left
    holding a delivered, unacked batch. A replica with AckAll recreates the consumer after the ack floor: the held
    batch first, every later message delivered once, none of the acked ones again."""
    partition = 2
    orders = orders_of(topology, partition, 2, "upgrade")
    sends = updates_of(orders, 8, random.Random(5))
    ids = [await publish_update(js, topology, o, i) for o, i in sends[:8]]
    old = Processor(settings_for(infra, database_url, topology, ack_policy="explicit"))
    await old.start()
    try:
        await wait_until(lambda: _eq(audit_count(db), 8), what="the first part applied")
        await old.wait_drained(WAIT_S)
    finally:
        await old.stop()
    durable = topology.consumer_name(partition)
    ids += [await publish_update(js, topology, o, i) for o, i in sends[8:]]
    sub = await js.pull_subscribe(topology.webhook_subject(partition), durable=durable, stream=topology.orders_stream)
    assert len(await sub.fetch(3, timeout=5)) == 3  # held, never acked
    await sub.unsubscribe()
    processor = Processor(settings_for(infra, database_url, topology, ack_policy="all"))
    await processor.start()
    try:
        await wait_until(lambda: _eq(audit_count(db), len(sends)), what="all audited")
        await processor.wait_drained(WAIT_S)
    finally:
        await processor.stop()
    info = await js.consumer_info(topology.orders_stream, durable)
    assert info.config.ack_policy == AckPolicy.ALL
    assert info.delivered.consumer_seq == len(sends) - 8  # from the ack floor on, once each
    await check_history(db, js, topology, expected_final(ids))
