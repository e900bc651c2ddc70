"""EventPublisher against real JetStream: per order in version order, duplicates acknowledged, and a publish
nobody stores fails the batch (no PubAck left waiting)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import nats
import nats.js.errors
import pytest
from fincart_core.contracts.events import OrderEvent, OrderState
from fincart_core.streams import ensure_streams
from fincart_processor.event_publisher import EventPublisher


def event(order_id: str, version: int) -> OrderEvent:
    now = datetime.now(UTC)
    return OrderEvent(
        order=OrderState(
            id=uuid.uuid4(),
            shopify_order_id=order_id,
            status="PENDING",
            total_price=Decimal("10.00"),
            shipping_fee=Decimal("9.99"),
            version=version,
            last_external_updated_at=now,
            last_webhook_id=f"wh-{version}",
            created_at=now,
            updated_at=now,
        )
    )


@pytest.fixture
async def nc(infra) -> AsyncIterator[nats.NATS]:  # type: ignore[no-untyped-def]
    client = await nats.connect(infra.nats_url, connect_timeout=5, max_reconnect_attempts=3)
    yield client
    await client.close()


async def test_versions_in_order_and_duplicates_acknowledged(nc, topology):  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await ensure_streams(js, topology)
    publisher = EventPublisher(nc, topology)
    await publisher.start()
    await publisher.publish([(event("a", v), None) for v in (3, 1, 2)] + [(event("b", 1), None)])
    await publisher.publish([(event("a", 2), None)])  # a re-published event: deduped by Nats-Msg-Id, still acked
    info = await js.stream_info(topology.events_stream)
    stored = [
        (await js.get_msg(topology.events_stream, seq)).headers["Nats-Msg-Id"]  # type: ignore[index]
        for seq in range(1, (info.state.messages or 0) + 1)
    ]
    assert sorted(stored) == ["a:1", "a:2", "a:3", "b:1"]
    assert [s for s in stored if s.startswith("a:")] == ["a:1", "a:2", "a:3"]


async def test_unstored_event_fails_the_publish(nc, topology):  # type: ignore[no-untyped-def]
    publisher = EventPublisher(nc, topology)  # no ORDER_EVENTS stream: nobody answers the publish
    await publisher.start()
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await publisher.publish([(event("a", 1), None), (event("b", 1), None)])
    assert not publisher._pending  # nothing left waiting for an answer
