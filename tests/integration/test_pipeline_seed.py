"""The seed scenario and its variants over HTTP: ingest + processor as real processes, real NATS,
Redis and PostgreSQL. A Shopify-like sender retries non-2xx answers (bounded)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from fincart_core.db.admin import drop_database
from fincart_core.settings import to_asyncpg_url
from fincart_devstack.devstack import DevStack, StackConfig
from fincart_devstack.localstack import EmbeddedNats, Infra

from tests.support.webhooks import BASE, order_payload, signed_request

SECRET = "seed-secret"
SEED_ORDER = "order_chaos_test_12345"
DRAIN_S = 60.0


def make_stack(infra: Infra, unique_name: str, tmp_path: Path, processors: int = 1) -> DevStack:
    config = StackConfig(
        database=unique_name,
        partitions=4,
        processors=processors,
        nats_prefix=unique_name[:20],
        webhook_secret=SECRET,
        ingest_port=0,
        with_sync=False,
    )
    return DevStack(config, infra, tmp_path)


@pytest.fixture
def stack(infra: Infra, unique_name: str, tmp_path: Path) -> Iterator[DevStack]:
    dev = make_stack(infra, unique_name, tmp_path)
    dev.start()
    yield dev
    dev.stop()
    asyncio.run(drop_database(dev.database_url))


async def send(http: httpx.AsyncClient, payload: dict, webhook_id: str, attempts: int = 20) -> httpx.Response:
    """POST like Shopify: retry a non-2xx answer or a broken connection with backoff, bounded."""
    body, headers = signed_request(payload, webhook_id, SECRET)
    for attempt in range(attempts):
        try:
            answer = await http.post("/webhooks/shopify", content=body, headers=headers)
            if answer.status_code < 300:
                return answer
        except httpx.TransportError:
            pass
        await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
    raise AssertionError(f"{webhook_id} not accepted after {attempts} attempts")


def seed_webhooks(order_id: str, updates: int, seed: int = 42) -> list[tuple[dict, str]]:
    """Each update its own status, fee tier and updated_at, shuffled (concurrent senders)."""
    rng = random.Random(seed)
    hooks = [
        (
            order_payload(order_id, i, BASE + timedelta(milliseconds=rng.randrange(0, 10_000))),
            f"chaos-webhook-{order_id}-{i}",
        )
        for i in range(updates)
    ]
    rng.shuffle(hooks)
    return hooks


async def wait_for_audit(db: asyncpg.Connection, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + DRAIN_S
    while await db.fetchval("SELECT count(*) FROM audit_log") < count:
        assert asyncio.get_running_loop().time() < deadline, "pipeline did not drain in time"
        await asyncio.sleep(0.1)


async def check_orders(db: asyncpg.Connection, sent: list[tuple[dict, str]]) -> None:
    expected: dict[str, tuple] = {}
    for payload, webhook_id in sent:
        pair = (str(payload["updated_at"]), webhook_id)
        expected[str(payload["id"])] = max(expected.get(str(payload["id"]), pair), pair)
    rows = await db.fetch("SELECT * FROM orders")
    assert len(rows) == len(expected)  # exactly one row per order
    audit = await db.fetch("SELECT webhook_id, shopify_order_id, status FROM audit_log")
    assert len(audit) == len({w for _, w in sent})  # one audit row per webhook
    assert not [a for a in audit if a["status"] == "failed"]
    for row in rows:
        assert all(
            row[c] is not None
            for c in (
                "status",
                "shipping_fee",
                "version",
                "last_external_updated_at",
                "last_webhook_id",
                "created_at",
                "updated_at",
            )
        )
        assert row["last_webhook_id"] == expected[row["shopify_order_id"]][1]
        processed = sum(
            1 for a in audit if a["shopify_order_id"] == row["shopify_order_id"] and a["status"] == "processed"
        )
        assert row["version"] == processed


@pytest.mark.parametrize("updates", [100, 10], ids=["seed-100", "small-10"])
async def test_seed_scenario(stack: DevStack, updates: int):
    hooks = seed_webhooks(SEED_ORDER, updates)
    async with httpx.AsyncClient(
        base_url=stack.ingest_url, timeout=30, limits=httpx.Limits(max_connections=100)
    ) as http:
        answers = await asyncio.gather(*(send(http, p, w, attempts=1) for p, w in hooks))
    assert [a.status_code for a in answers] == [200] * updates
    assert {a.json()["status"] for a in answers} == {"accepted"}
    db = await asyncpg.connect(to_asyncpg_url(stack.database_url))
    try:
        await wait_for_audit(db, updates)
        await check_orders(db, hooks)
        statuses = {r["status"] for r in await db.fetch("SELECT status FROM audit_log")}
        assert statuses == {"processed", "discarded"}
        row = await db.fetchrow("SELECT * FROM orders WHERE shopify_order_id = $1", SEED_ORDER)
        newest = max(hooks, key=lambda h: (h[0]["updated_at"], h[1]))[0]
        assert str(row["total_price"]) == newest["total_price"]
    finally:
        await db.close()


async def test_a_thousand_orders(stack: DevStack):
    hooks = [h for o in range(1000) for h in seed_webhooks(f"order-{o}", 2, seed=o)]
    async with httpx.AsyncClient(
        base_url=stack.ingest_url, timeout=30, limits=httpx.Limits(max_connections=50)
    ) as http:
        sem = asyncio.Semaphore(50)

        async def bounded(payload: dict, webhook_id: str) -> httpx.Response:
            async with sem:
                return await send(http, payload, webhook_id)

        await asyncio.gather(*(bounded(p, w) for p, w in hooks))
    db = await asyncpg.connect(to_asyncpg_url(stack.database_url))
    try:
        await wait_for_audit(db, 2000)
        await check_orders(db, hooks)
    finally:
        await db.close()


async def test_nats_restart_during_load_loses_nothing(infra: Infra, unique_name: str, tmp_path: Path):
    broker = EmbeddedNats(tmp_path / "nats")
    broker.start()
    stack = make_stack(Infra(broker.url, infra.redis_url, infra.database_url), unique_name, tmp_path)
    stack.start()
    hooks = [h for o in range(50) for h in seed_webhooks(f"order-{o}", 10, seed=o)]
    try:
        async with httpx.AsyncClient(base_url=stack.ingest_url, timeout=30) as http:
            sem = asyncio.Semaphore(20)

            async def bounded(payload: dict, webhook_id: str) -> httpx.Response:
                async with sem:
                    return await send(http, payload, webhook_id)

            load = asyncio.gather(*(bounded(p, w) for p, w in hooks))
            await asyncio.sleep(0.5)
            broker.stop()  # JetStream's file store survives the restart
            await asyncio.sleep(1.0)
            broker.start()
            await load
        db = await asyncpg.connect(to_asyncpg_url(stack.database_url))
        try:
            await wait_for_audit(db, 500)
            await check_orders(db, hooks)  # nothing lost, nothing applied twice
        finally:
            await db.close()
    finally:
        stack.stop()
        broker.stop()
        await drop_database(stack.database_url)
