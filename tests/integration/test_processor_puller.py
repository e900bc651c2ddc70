"""Puller (the processor's pull requests) against real JetStream: fetch's answers without nats-py's fetch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from fincart_core.streams import ensure_streams
from fincart_processor.puller import Puller
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

Pulling = tuple[Puller, JetStreamContext, NATS]


@pytest.fixture
async def puller(infra, topology) -> AsyncIterator[Pulling]:  # type: ignore[no-untyped-def]
    nc = await nats.connect(infra.nats_url, connect_timeout=5, max_reconnect_attempts=3)
    js = nc.jetstream()
    await ensure_streams(js, topology)
    await js.add_consumer(
        topology.orders_stream,
        ConsumerConfig(
            durable_name="puller", filter_subject=topology.webhook_subject(0), ack_policy=AckPolicy.EXPLICIT
        ),
    )
    pull = Puller(nc, topology.orders_stream, "puller")
    await pull.start()
    yield pull, js, nc
    await pull.stop()
    await nc.close()


async def publish(js, topology, count: int, start: int = 0) -> None:  # type: ignore[no-untyped-def]
    for i in range(start, start + count):
        await js.publish(topology.webhook_subject(0), str(i).encode())


async def test_what_is_there_up_to_the_batch_in_order(puller, topology):  # type: ignore[no-untyped-def]
    pull, js, _ = puller
    await publish(js, topology, 7)
    first = await pull.fetch(5, timeout=5)
    rest = await pull.fetch(5, timeout=5)  # two are left: returned without waiting for the batch to fill
    assert [m.data for m in first + rest] == [str(i).encode() for i in range(7)]
    for msg in first + rest:
        await msg.ack()


async def test_an_empty_wait_asks_no_more_than_twice(puller):  # type: ignore[no-untyped-def]
    pull, _, nc = puller
    sent = nc.stats["out_msgs"]
    assert await pull.fetch(5, timeout=0.3) == []
    assert nc.stats["out_msgs"] - sent <= 2  # the requests fetch makes, not a loop of them


async def test_a_message_is_returned_without_waiting_for_the_batch(puller, topology):  # type: ignore[no-untyped-def]
    pull, js, _ = puller

    async def publish_later() -> None:
        await asyncio.sleep(0.5)  # the fetch is waiting by then
        await publish(js, topology, 1)

    later = asyncio.create_task(publish_later())
    # a pull waiting for its batch to fill would hold the message until the 60 s expiry
    msgs = await asyncio.wait_for(pull.fetch(500, timeout=60), 10)
    await later
    assert [m.data for m in msgs] == [b"0"]
