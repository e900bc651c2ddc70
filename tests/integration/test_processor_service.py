"""The processor against real NATS JetStream and PostgreSQL (webhooks published straight onto ORDERS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict
from collections.abc import Callable, Collection
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from fincart_core.contracts.events import OrderEvent
from fincart_core.contracts.webhook import WebhookMessage
from fincart_devstack.localstack import ServiceProcess, find_binary, free_port
from fincart_processor.consumer import consumer_config, parse
from fincart_processor.order_store import apply_batch
from fincart_processor.runner import Processor
from fincart_processor.settings import ProcessorSettings
from pydantic import ValidationError

from tests.support.processor_model import Model, Row
from tests.support.webhooks import BASE, order_payload, publish_webhook

WAIT_S = 60.0


async def wait_until(check: Callable[[], object], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():  # type: ignore[misc]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s")


def settings_for(infra, database_url, topology, **extra) -> ProcessorSettings:  # type: ignore[no-untyped-def]
    return ProcessorSettings(
        database_url=database_url,
        nats_url=infra.nats_url,
        partitions=topology.partitions,
        nats_prefix=topology.prefix,
        fetch_timeout_s=0.2,
        retry_backoff_s=0.05,
        **extra,
    )


async def audit_count(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM audit_log")


async def read_events(js, topology) -> list[OrderEvent]:  # type: ignore[no-untyped-def]
    info = await js.stream_info(topology.events_stream)
    return [
        OrderEvent.model_validate_json((await js.get_msg(topology.events_stream, seq)).data)
        for seq in (range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ())
    ]


async def events_by_order(js, topology) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    versions: dict[str, list[int]] = defaultdict(list)
    for event in await read_events(js, topology):
        versions[event.order.shopify_order_id].append(event.order.version)
    return versions


async def send_conflicting_updates(js, topology, orders: int, updates: int, seed: int = 7) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    """Every update of every order, shuffled (out of order), some timestamps equal; returns the expected
    final (updated_at, webhook id) per order: the greatest pair."""
    rng = random.Random(seed)
    sends = [(f"order-{o}", i) for o in range(orders) for i in range(updates)]
    rng.shuffle(sends)
    expected: dict[str, tuple] = {}
    for order_id, i in sends:
        updated_at = BASE + timedelta(seconds=i // 2)  # pairs share a timestamp: the id decides
        webhook_id = f"wh-{order_id}-{i:03d}"
        await publish_webhook(js, topology, order_payload(order_id, i, updated_at), webhook_id)
        expected[order_id] = max(expected.get(order_id, (updated_at, webhook_id)), (updated_at, webhook_id))
    return expected


async def stream_model(js, topology, failed: Collection[str] = ()) -> Model:  # type: ignore[no-untyped-def]
    """The reference model fed with every webhook on ORDERS, in stream order, but the poison (``failed``:
    webhook ids the database refuses; unparseable ones are skipped anyway)."""
    model = Model()
    info = await js.stream_info(topology.orders_stream)
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        with contextlib.suppress(ValidationError, ValueError):  # poison is not the model's business
            webhook = parse((await js.get_msg(topology.orders_stream, seq)).data)
            if webhook.webhook_id not in failed:
                model.apply(webhook)
    return model


async def check_history(db, js, topology, expected: dict[str, tuple], failed: Collection[str] = ()) -> None:  # type: ignore[no-untyped-def]
    """Rows, audit statuses and versions, and events are exactly those of applying every webhook one by one
    in stream order, the poison (``failed``, audited ``failed``) left out; each order's events are its versions
    1..n, once each, in order."""
    model = await stream_model(js, topology, failed)
    model.audit.update({webhook_id[:500]: ("failed", None) for webhook_id in failed})
    rows = {r["shopify_order_id"]: r for r in await db.fetch("SELECT * FROM orders")}
    assert set(rows) == set(expected) == set(model.rows)
    assert {
        k: Row(
            r["version"],
            r["last_external_updated_at"],
            r["last_webhook_id"],
            r["status"],
            r["total_price"],
            r["shipping_fee"],
        )
        for k, r in rows.items()
    } == model.rows
    audit = {r["webhook_id"]: (r["status"], r["version"]) for r in await db.fetch("SELECT * FROM audit_log")}
    assert audit == model.audit  # no other failed, none missing, none extra
    for order_id, (updated_at, webhook_id) in expected.items():
        row = rows[order_id]
        assert (row["last_external_updated_at"], row["last_webhook_id"]) == (updated_at, webhook_id)
    events: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for event in await read_events(js, topology):
        events[event.order.shopify_order_id].append((event.order.version, event.order.last_webhook_id))
    applied: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for order_id, version, webhook_id in model.events:
        applied[order_id].append((version, webhook_id))
    assert events == applied


async def test_conflicting_updates_across_partitions(infra, database_url, topology, js, db):
    expected = await send_conflicting_updates(js, topology, orders=12, updates=15)
    processor = Processor(settings_for(infra, database_url, topology, batch_size=40))
    await processor.start()
    try:
        await wait_until(lambda: _eq(audit_count(db), 12 * 15), what="all webhooks audited")
        await wait_until(lambda: _events_complete(js, topology, db), what="all events published")
        assert (await processor.readiness()) == {"nats": "ok", "postgres": "ok", "leases": "ok", "consumers": "ok"}
    finally:
        await processor.stop()
    await check_history(db, js, topology, expected)
    row = await db.fetchrow("SELECT * FROM orders WHERE shopify_order_id = 'order-0'")
    assert row["status"] in ("PENDING", "CONFIRMED", "SHIPPED", "CANCELLED") and row["shipping_fee"] is not None


async def test_redelivery_changes_nothing_and_republishes(infra, database_url, topology, js, db):
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    message = WebhookMessage(
        webhook_id="wh-r-1", topic="orders/updated", received_at=BASE, order=order_payload("order-r", 1)
    )
    await js.publish(
        topology.webhook_subject_for("order-r"),
        message.model_dump_json().encode(),
        headers={"Nats-Msg-Id": "wh-r-1", "traceparent": traceparent},
    )
    processor = Processor(settings_for(infra, database_url, topology))
    await processor.start()
    try:
        await wait_until(lambda: _eq(audit_count(db), 1))
        first = await js.get_msg(topology.events_stream, 1)
        # the same webhook again under another stream message id: a redelivery as far as FinCart knows;
        # a short dedupe window on ORDER_EVENTS lets the re-published event be stored, so we can see it
        config = (await js.stream_info(topology.events_stream)).config
        config.duplicate_window = 0.2
        await js.update_stream(config)
        await asyncio.sleep(0.5)
        await js.publish(
            topology.webhook_subject_for("order-r"),
            message.model_dump_json().encode(),
            headers={"Nats-Msg-Id": "again"},
        )
        await processor.wait_drained(WAIT_S)
        await wait_until(lambda: _events_stored(js, topology, 2), what="event re-published")
    finally:
        await processor.stop()
    row = await db.fetchrow("SELECT version FROM orders WHERE shopify_order_id = 'order-r'")
    assert row["version"] == 1 and await audit_count(db) == 1
    again = await js.get_msg(topology.events_stream, 2)
    assert OrderEvent.model_validate_json(again.data) == OrderEvent.model_validate_json(first.data)
    assert again.headers["Nats-Msg-Id"] == "order-r:1"
    # the event continues the webhook's trace (same trace id as the webhook message's traceparent)
    assert first.headers["traceparent"].split("-")[1] == traceparent.split("-")[1]


async def test_poison_message_is_failed_and_dead_lettered(infra, database_url, topology, js, db):
    await js.publish(topology.webhook_subject(0), b"{not a webhook", headers={"Nats-Msg-Id": "poison-1"})
    await publish_webhook(js, topology, order_payload("order-ok", 1), "wh-ok")
    # valid JSON that PostgreSQL cannot store: must not stall its partition with endless retries
    await publish_webhook(js, topology, order_payload("order\x00nul", 1), "poison-2")
    processor = Processor(settings_for(infra, database_url, topology))
    await processor.start()
    try:
        await wait_until(lambda: _eq(audit_count(db), 3), what="poison audited")
    finally:
        await processor.stop()
    statuses = dict(await db.fetch("SELECT webhook_id, status FROM audit_log"))
    assert statuses == {"poison-1": "failed", "poison-2": "failed", "wh-ok": "processed"}
    dead = {m.headers["Nats-Msg-Id"]: m for m in [await js.get_msg(topology.dlq_stream, seq) for seq in (1, 2)]}
    assert set(dead) == {"dlq:poison-1", "dlq:poison-2"}
    assert dead["dlq:poison-1"].data == b"{not a webhook" and "Fincart-Error" in dead["dlq:poison-1"].headers
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


async def test_two_replicas_split_the_partitions(infra, database_url, topology, js, db):
    fast_leases = settings_for(infra, database_url, topology, lease_renew_s=0.2, lease_ttl_s=2, db_query_timeout_s=1)
    replicas = [Processor(fast_leases) for _ in (0, 1)]
    expected = await send_conflicting_updates(js, topology, orders=8, updates=6, seed=3)
    for replica in replicas:
        await replica.start()
    try:
        await wait_until(lambda: _eq(audit_count(db), 48))
        await wait_until(lambda: _events_complete(js, topology, db))
        await wait_until(lambda: _split_evenly(replicas, topology.partitions), what="partitions shared evenly")
    finally:
        for replica in replicas:
            await replica.stop()
    await check_history(db, js, topology, expected)


async def test_dropped_database_connections_are_retried_never_failed(infra, database_url, topology, js, db):
    expected = await send_conflicting_updates(js, topology, orders=20, updates=10, seed=5)
    processor = Processor(settings_for(infra, database_url, topology, batch_size=5))
    await processor.start()
    dbname = database_url.rsplit("/", 1)[1]
    terminated = 0
    try:
        for _ in range(5):  # keep cutting the processor's connections while it works
            terminated += await db.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                dbname,
            )
            await asyncio.sleep(0.1)
        assert terminated > 0, "the fault must hit the processor's connections"
        await wait_until(lambda: _eq(audit_count(db), 200), what="all applied after connection drops")
        await wait_until(lambda: _events_complete(js, topology, db))
    finally:
        await processor.stop()
    await check_history(db, js, topology, expected)


async def test_sigkill_mid_batch_loses_nothing_and_counts_nothing_twice(
    infra, database_url, topology, js, db, service_env, tmp_path: Path
):
    # a backlog big enough that the kill (polled every 100 ms) lands well before the end
    orders, updates = 250, 20
    total = orders * updates
    expected = await send_conflicting_updates(js, topology, orders=orders, updates=updates, seed=11)
    port = free_port()
    processor = ServiceProcess(
        name="processor",
        argv=[find_binary("fincart-processor")],
        env={
            **service_env,
            "FINCART_HTTP_PORT": str(port),
            "FINCART_BATCH_SIZE": "50",
            "FINCART_FETCH_TIMEOUT_S": "0.2",
        },
        log_path=tmp_path / "processor.log",
        port=port,
    )
    processor.start()
    try:
        await wait_until(lambda: _gt(audit_count(db), 200), what="processing under way")
        processor.kill()
        stopped_at = await audit_count(db)
        assert stopped_at < total, "the kill should land mid-run"
        processor.start()
        await wait_until(lambda: _eq(audit_count(db), total), what="all applied after restart")
        await wait_until(lambda: _events_complete(js, topology, db))
        async with httpx.AsyncClient(base_url=processor.base_url, timeout=5) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok", "checks": {}}
            assert (await http.get("/readyz")).json()["checks"] == {
                "nats": "ok",
                "postgres": "ok",
                "leases": "ok",
                "consumers": "ok",
            }
            metrics = ""

            async def lag_reported() -> bool:  # the lag is read every FINCART_LAG_INTERVAL_S after a start
                nonlocal metrics
                metrics = (await http.get("/metrics")).text
                return 'fincart_processor_consumer_lag{partition="0"}' in metrics

            await wait_until(lag_reported, what="the consumer lag on /metrics")
    finally:
        processor.stop()  # SIGTERM: finishes the batch in flight and exits cleanly
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too
    assert processor.proc is not None and processor.proc.returncode in (0, -15), processor.log_tail()
    assert "Application shutdown complete" in processor.log_tail(5)
    await check_history(db, js, topology, expected)
    for name in (
        "fincart_processor_batch_size_bucket",
        "fincart_processor_apply_seconds_bucket",
        'fincart_processor_webhooks_total{result="processed"}',
        "fincart_processor_redeliveries_total",
        "fincart_processor_dead_letters_total",
        'fincart_processor_consumer_lag{partition="0"}',
        "fincart_processor_events_published_total",
    ):
        assert name in metrics, name
    assert _sample(metrics, "fincart_processor_events_published_total") > 0
    log_line = next(line for line in processor.log_tail(400).splitlines() if "batch applied" in line)
    assert json.loads(log_line)["partition"] in range(topology.partitions)  # JSON logs


async def _split_evenly(replicas: list[Processor], partitions: int) -> bool:
    held = [r.partitions for r in replicas]
    return sorted(p for ps in held for p in ps) == list(range(partitions)) and all(
        len(ps) == partitions // len(replicas) for ps in held
    )


def _sample(metrics: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name + " "))


async def _eq(value, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await value == expected


async def _gt(value, bound: int) -> bool:  # type: ignore[no-untyped-def]
    return await value > bound


async def _events_complete(js, topology, db) -> bool:  # type: ignore[no-untyped-def]
    versions = dict(await db.fetch("SELECT shopify_order_id, version FROM orders"))
    events = await events_by_order(js, topology)
    return all(len(events.get(k, [])) >= v for k, v in versions.items())


async def _events_stored(js, topology, count: int) -> bool:  # type: ignore[no-untyped-def]
    return (await js.stream_info(topology.events_stream)).state.messages == count


async def _consumed(js, topology) -> bool:  # type: ignore[no-untyped-def]
    pending = 0
    for p in range(topology.partitions):
        try:
            info = await js.consumer_info(topology.orders_stream, topology.consumer_name(p))
        except nats.js.errors.NotFoundError:
            continue
        pending += info.num_pending + info.num_ack_pending
    return pending == 0


@pytest.mark.parametrize("committed", [True, False], ids=["died-after-commit", "died-before-commit"])
async def test_batch_of_a_dead_processor_is_applied_first(infra, database_url, topology, js, db, committed):
    """A processor died holding a partial batch (committed but no events published, or not committed at all).
    Its successor must not let newer webhooks overtake it: same audit as one by one, events in version order."""
    partition = 1
    orders = [
        o
        for o in (f"order-{i}" for i in range(200))
        if topology.webhook_subject_for(o) == topology.webhook_subject(partition)
    ][:3]
    rng = random.Random(partition)
    sends = [(o, i) for o in orders for i in range(8)]
    rng.shuffle(sends)
    for order_id, i in sends:
        await publish_webhook(
            js, topology, order_payload(order_id, i, BASE + timedelta(seconds=i // 2)), f"wh-{order_id}-{i:03d}"
        )
    settings = settings_for(infra, database_url, topology, ack_wait_s=2.0)
    dead = Processor(settings)
    config = consumer_config(topology, partition, settings)
    sub = await js.pull_subscribe(
        config.filter_subject or "", durable=config.durable_name, stream=topology.orders_stream, config=config
    )
    held = await sub.fetch(7, timeout=5)
    assert len(held) == 7
    if committed:
        await apply_batch(db, [parse(m.data) for m in held], None)
    await sub.unsubscribe()  # no ack, no events: what SIGKILL leaves behind
    successor = dead  # same settings, fresh start
    await successor.start()
    try:
        await wait_until(lambda: _eq(audit_count(db), len(sends)), what="all audited")
        await wait_until(lambda: _events_complete(js, topology, db), what="all events published")
        await wait_until(lambda: _consumed(js, topology), what="held batch redelivered and acked")
    finally:
        await successor.stop()
    await check_history(
        db,
        js,
        topology,
        {o: max((BASE + timedelta(seconds=i // 2), f"wh-{o}-{i:03d}") for oo, i in sends if oo == o) for o in orders},
    )
