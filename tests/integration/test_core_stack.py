"""The local stack's embedded servers and the migrations, against real processes."""

import asyncpg
import nats
import redis.asyncio as aioredis
from fincart_core.db.admin import ensure_database, with_database
from fincart_core.db.migrate import upgrade
from fincart_core.partition import Topology
from fincart_core.settings import to_asyncpg_url
from fincart_core.streams import PartitionMismatch, ensure_streams
from fincart_devstack.localstack import start_infra


async def test_embedded_servers_start_and_serve(tmp_path):
    infra = start_infra(env={}, workdir=tmp_path)  # nothing configured: all three embedded
    try:
        assert set(infra.embedded) == {"nats", "redis", "postgres"}
        nc = await nats.connect(infra.nats_url)
        js = nc.jetstream()
        await ensure_streams(js, Topology(2))
        ack = await js.publish("orders.webhooks.1", b"x", headers={"Nats-Msg-Id": "a"})
        dup = await js.publish("orders.webhooks.1", b"x", headers={"Nats-Msg-Id": "a"})
        assert ack.stream == "ORDERS" and dup.duplicate
        await nc.close()
        r = aioredis.from_url(infra.redis_url)
        assert await r.set("k", "v", nx=True) and not await r.set("k", "v", nx=True)
        await r.aclose()
        url = with_database(infra.database_url, "fincart")
        assert await ensure_database(url) and not await ensure_database(url)
        upgrade(url)
        conn = await asyncpg.connect(to_asyncpg_url(url))
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        await conn.close()
        assert {"orders", "audit_log", "alembic_version"} <= tables
    finally:
        infra.stop()
    assert not any(p.running for p in infra.embedded.values())


async def test_streams_refuse_another_partition_count(infra, topology):
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    try:
        await ensure_streams(js, topology)
        await ensure_streams(js, topology)  # idempotent
        try:
            await ensure_streams(js, Topology(topology.partitions + 1, topology.prefix))
        except PartitionMismatch as exc:
            assert "partitions" in str(exc)
        else:
            raise AssertionError("a different partition count must be refused")
    finally:
        await nc.close()


async def test_migrations_create_the_schema(database_url):
    conn = await asyncpg.connect(to_asyncpg_url(database_url))
    try:
        cols = {
            r["column_name"]: r["is_nullable"]
            for r in await conn.fetch(
                "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name='orders'"
            )
        }
        assert cols["shipping_fee"] == "NO" and cols["version"] == "NO" and cols["total_price"] == "YES"
        await conn.execute(
            "INSERT INTO audit_log (webhook_id, shopify_order_id, status) VALUES ('w', 'o', 'processed')"
        )
        try:
            await conn.execute(
                "INSERT INTO audit_log (webhook_id, shopify_order_id, status) VALUES ('w2', 'o', 'weird')"
            )
        except asyncpg.CheckViolationError:
            pass
        else:
            raise AssertionError("audit status check constraint missing")
    finally:
        await conn.close()
