"""Credentials between components on the local stack (embedded NATS with per-component users, Redis with a
password): what each component may do on the broker, and that the whole pipeline runs with them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
import redis.asyncio as aioredis
from fincart_chaos import artifacts
from fincart_chaos.ledger import LedgerEntry, RunnerStart
from fincart_core.db.admin import drop_database
from fincart_core.partition import Topology
from fincart_core.signing import sign
from fincart_core.streams import ensure_streams
from fincart_devstack.devstack import DevStack, StackConfig
from fincart_devstack.localstack import Infra, start_infra
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

TIMEOUT_S = 2.0  # a denied JetStream request gets no answer: it times out


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, infra: Infra) -> Iterator[Infra]:
    """Embedded NATS and Redis with credentials; the shared PostgreSQL."""
    stack = start_infra(
        {"FINCART_DATABASE_URL": infra.database_url}, workdir=tmp_path_factory.mktemp("secured"), credentials=True
    )
    yield stack
    stack.stop()


async def connect_as(infra: Infra, component: str):  # type: ignore[no-untyped-def]
    return await nats.connect(infra.nats_url_for(component), connect_timeout=5, allow_reconnect=False)


async def test_a_connection_without_a_user_is_refused(secured: Infra) -> None:
    """A client without a user (any pod but FinCart's components and the chaos runners) is refused."""
    anonymous = secured.nats_url.replace(secured.nats_url.split("//")[1].split("@")[0] + "@", "")
    with pytest.raises(NatsError, match="Authorization Violation"):
        await nats.connect(anonymous, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=0)
    with pytest.raises(NatsError, match="Authorization Violation"):
        await nats.connect(
            secured.nats_url.replace("admin:", "ingest:"),
            connect_timeout=5,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )  # a known user with another user's password


async def test_ingest_publishes_webhooks_only(secured: Infra) -> None:
    topology = Topology(4, "credentials")
    admin = await connect_as(secured, "admin")
    ingest = await connect_as(secured, "ingest")
    try:
        admin_js = admin.jetstream()
        await ensure_streams(admin_js, topology)
        js = ingest.jetstream(timeout=TIMEOUT_S)
        assert (await js.publish(topology.webhook_subject(0), b"{}")).stream == topology.orders_stream
        with pytest.raises(NatsTimeout):
            await js.publish(topology.event_subject(0), b"{}")
        with pytest.raises(NatsTimeout):
            await js.publish(topology.dlq_subject, b"{}")
        with pytest.raises(NatsTimeout):
            await js.purge_stream(topology.orders_stream)
        with pytest.raises(NatsTimeout):
            await js.delete_stream(topology.events_stream)
        assert (await admin_js.stream_info(topology.orders_stream)).state.messages == 1  # nothing purged
        assert (await admin_js.stream_info(topology.events_stream)).state.messages == 0  # nothing published
        for component in ("processor", "sync"):  # nobody else feeds webhooks in past ingest's HMAC check
            other = await connect_as(secured, component)
            with pytest.raises(NatsTimeout):
                await other.jetstream(timeout=TIMEOUT_S).publish(topology.webhook_subject(1), b"{}")
            await other.close()
        sync = await connect_as(secured, "sync")
        with pytest.raises(NatsTimeout):
            await sync.jetstream(timeout=TIMEOUT_S).publish(topology.event_subject(1), b"{}")
        await sync.close()
        await admin_js.delete_stream(topology.orders_stream)
        await admin_js.delete_stream(topology.events_stream)
        await admin_js.delete_stream(topology.dlq_stream)
    finally:
        await ingest.close()
        await admin.close()


@pytest.mark.parametrize("prefix", ["", "credchaos"])
async def test_chaos_runners_carry_ledgers_and_bundles_only(secured: Infra, prefix: str) -> None:
    """The chaos user (load and verify runners) does all fincart_chaos.artifacts needs, and no more."""
    url = secured.nats_url_for("chaos")
    sent = [
        LedgerEntry(
            webhook_id=f"w-{i}",
            order_id=f"o-{i}",
            kind="valid",
            status=200,
            first_status=200,
            attempts=1,
            sent_at=float(i),
            done_at=i + 0.5,
            latency_ms=500.0,
        )
        for i in range(50)
    ]
    assert await artifacts.publish_ledger(url, prefix, "run1", RunnerStart(runner=0, stream_seq=7), sent) == 3
    await artifacts.publish_ledger(url, prefix, "run1", RunnerStart(runner=1), sent[:3])  # the stream exists now
    got, starts, missing = await artifacts.read_ledgers(url, prefix, "run1", runners=2, timeout=30)
    assert (len(got), sorted(s.runner for s in starts), missing) == (53, [0, 1], [])
    files = {"report.json": b"{}", "report.html": bytes(range(256)) * 1200}  # several 128 KiB chunks
    assert "run1/" in await artifacts.put_bundle(url, prefix, "run1", files)
    assert await artifacts.fetch_bundle(url, prefix, "run1", list(files)) == files

    topology = Topology(2, prefix or "credchaos-orders")
    admin = await connect_as(secured, "admin")
    chaos = await connect_as(secured, "chaos")
    try:
        admin_js = admin.jetstream()
        await ensure_streams(admin_js, topology)
        js = chaos.jetstream(timeout=TIMEOUT_S)
        with pytest.raises(NatsTimeout):
            await js.publish(topology.webhook_subject(0), b"{}")
        with pytest.raises(NatsTimeout):
            await js.purge_stream(artifacts.stream_name(prefix))
        with pytest.raises(NatsTimeout):
            await js.delete_stream(artifacts.stream_name(prefix))
        with pytest.raises(NatsTimeout):
            await js.delete_object_store(artifacts.bucket_name(prefix))
        assert (await admin_js.stream_info(topology.orders_stream)).state.messages == 0  # no forged webhook
        assert (await admin_js.stream_info(artifacts.stream_name(prefix))).state.messages == 6  # nothing purged
        assert await artifacts.fetch_bundle(url, prefix, "run1", ["report.json"]) == {"report.json": b"{}"}
        for stream in (topology.orders_stream, topology.events_stream, topology.dlq_stream):
            await admin_js.delete_stream(stream)
        await admin_js.delete_stream(artifacts.stream_name(prefix))
        await admin_js.delete_object_store(artifacts.bucket_name(prefix))
    finally:
        await chaos.close()
        await admin.close()


async def test_redis_needs_the_password(secured: Infra) -> None:
    assert secured.credentials is not None
    bare = secured.redis_url.replace(f":{secured.credentials.redis_password}@", "")
    anonymous = aioredis.from_url(bare, socket_timeout=5)
    with pytest.raises(aioredis.AuthenticationError):
        await anonymous.set("fincart:webhook:forged", "1")
    await anonymous.aclose()
    client = aioredis.from_url(secured.redis_url, socket_timeout=5)
    assert await client.ping()
    await client.aclose()


def test_the_pipeline_runs_with_credentials(secured: Infra, unique_name: str, tmp_path: Path) -> None:
    """ingest, processor and sync each on their own NATS user: a webhook is stored and readable."""
    config = StackConfig(
        database=unique_name,
        partitions=4,
        nats_prefix=unique_name[:20],
        ingest_port=0,
        sync_port=0,
        webhook_secret="credentials-secret",
    )
    stack = DevStack(config, secured, tmp_path)
    stack.start()
    try:
        body = json.dumps(
            {
                "id": "cred-1",
                "updated_at": "2026-01-01T00:00:00Z",
                "financial_status": "paid",
                "fulfillment_status": None,
                "total_price": "10.00",
                "shipping_lines": [],
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/updated",
            "X-Shopify-Webhook-Id": "cred-wh-1",
            "X-Shopify-Hmac-Sha256": sign(body, "credentials-secret"),
            "X-Shopify-Shop-Domain": "credentials.myshopify.com",
        }
        assert httpx.post(f"{stack.ingest_url}/webhooks/shopify", content=body, headers=headers, timeout=10).is_success
        auth = {"Authorization": f"Bearer {config.read_token}"}
        for _ in range(150):
            answer = httpx.get(f"{stack.sync_url}/orders/cred-1", headers=auth, timeout=10)
            if answer.status_code == 200:
                break
            time.sleep(0.2)
        assert answer.status_code == 200 and answer.json()["status"] == "CONFIRMED"
        for service in stack.services():
            assert "ermissions violation" not in service.log_tail(500), service.name
    finally:
        stack.stop()
        asyncio.run(drop_database(stack.database_url))
