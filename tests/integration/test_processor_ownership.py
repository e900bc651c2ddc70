"""One applier per partition, whatever the replica count (real NATS JetStream 2.9 and PostgreSQL, processors as
processes): replicas started together, as during a rollout, then one killed -9; and the failover time of a
dead replica's partitions."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import asyncpg
from fincart_devstack.localstack import ServiceProcess, find_binary, free_port
from fincart_processor.runner import Processor

from tests.integration.test_processor_service import (
    WAIT_S,
    _events_complete,
    audit_count,
    check_history,
    read_events,
    settings_for,
    wait_until,
)
from tests.support.webhooks import BASE, order_payload, publish_webhook

# the replica sets of a rollout from 2 to 3 replicas, all running at once: under the old static split
# (p % N == i) these overlapped; the leases make the old arguments irrelevant (and they are ignored)
ROLLOUT = [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]


def processor(service_env: dict[str, str], tmp_path: Path, name: str, **env: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(
        name=name,
        argv=[find_binary("fincart-processor")],
        log_path=tmp_path / f"{name}.log",
        port=port,
        env={**service_env, "FINCART_HTTP_PORT": str(port), "FINCART_FETCH_TIMEOUT_S": "0.2", **env},
    )


async def owners(db: asyncpg.Connection) -> dict[int, str]:
    """Valid lease owner of each partition."""
    return dict(await db.fetch("SELECT partition, owner FROM partition_leases WHERE expires_at > now()"))


def pid_of(owner: str) -> int:
    return int(owner.split("/")[0].rsplit("-", 2)[1])  # <hostname>-<pid>-<n>/<incarnation>


async def send_load(js, topology, orders: int, updates: int, expected: dict[str, tuple], pause: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """Conflicting updates, shuffled, published at a steady pace (50 per ``pause``) so that they arrive during
    the test."""
    rng = random.Random(23)
    sends = [(f"order-{o}", i) for o in range(orders) for i in range(updates)]
    rng.shuffle(sends)
    for n, (order_id, i) in enumerate(sends):
        updated_at = BASE + timedelta(seconds=i // 2)
        webhook_id = f"wh-{order_id}-{i:03d}"
        await publish_webhook(js, topology, order_payload(order_id, i, updated_at), webhook_id)
        expected[order_id] = max(expected.get(order_id, (updated_at, webhook_id)), (updated_at, webhook_id))
        if n % 50 == 49:
            await asyncio.sleep(pause)


async def test_replicas_of_a_rollout_at_once_then_one_killed(infra, topology, js, db, service_env, tmp_path):
    replicas = [
        processor(
            service_env,
            tmp_path,
            f"processor-{i}-of-{n}",
            FINCART_REPLICAS=str(n),
            FINCART_REPLICA_INDEX=str(i),
            FINCART_BATCH_SIZE="20",
            FINCART_LEASE_TTL_S="3",
            FINCART_LEASE_RENEW_S="0.5",
            FINCART_DB_QUERY_TIMEOUT_S="1.5",
        )
        for n, i in ROLLOUT
    ]
    orders, updates = 60, 40
    expected: dict[str, tuple] = {}
    load = asyncio.create_task(send_load(js, topology, orders, updates, expected))
    try:
        for replica in replicas:
            replica.start()
        await wait_until(lambda: _more_than(audit_count(db), orders * updates // 3), what="processing under way")
        held = await owners(db)
        victim = next(r for r in replicas if r.pid in {pid_of(o) for o in held.values()})
        victim.kill()
        killed_at = time.monotonic()
        orphaned = {p for p, o in held.items() if pid_of(o) == victim.pid}
        await wait_until(lambda: _taken_over(db, orphaned, victim.pid), what="the dead replica's partitions taken")
        print(
            f"\nfailover of partitions {sorted(orphaned)} (TTL 3 s, renew 0.5 s, under load): "
            f"{time.monotonic() - killed_at:.2f} s"
        )
        await load
        await wait_until(lambda: _equal(audit_count(db), orders * updates), what="every webhook audited")
        await wait_until(lambda: _events_complete(js, topology, db), what="every event published")
    finally:
        load.cancel()
        for replica in replicas:
            replica.stop()
    # every order's version = its processed count; every version has exactly one event, in version order
    processed = dict(
        await db.fetch("SELECT shopify_order_id, count(*) FROM audit_log WHERE status = 'processed' GROUP BY 1")
    )
    versions = dict(await db.fetch("SELECT shopify_order_id, version FROM orders"))
    assert versions == processed and len(versions) == orders
    events: dict[str, list[int]] = defaultdict(list)
    for event in await read_events(js, topology):
        events[event.order.shopify_order_id].append(event.order.version)
    assert events == {o: list(range(1, v + 1)) for o, v in versions.items()}
    # and exactly what applying every webhook one by one in stream order gives (nothing lost, nothing twice)
    await check_history(db, js, topology, expected)


async def test_a_dead_replicas_partitions_are_taken_over(infra, topology, js, db, service_env, tmp_path):
    """With the default lease settings (TTL 10 s, renew 2 s): the failover time is printed, and only a generous
    bound is asserted (the machine is shared)."""
    first, second = (processor(service_env, tmp_path, f"processor-{n}") for n in (0, 1))
    try:
        first.start()
        second.start()
        await wait_until(
            lambda: _shared(db, {first.pid, second.pid}, topology.partitions),
            what="the partitions shared by both replicas",
        )
        orphaned = {p for p, o in (await owners(db)).items() if pid_of(o) == first.pid}
        first.kill()
        killed_at = time.monotonic()
        await wait_until(lambda: _taken_over(db, orphaned, first.pid), what="the dead replica's partitions taken")
        taken = time.monotonic() - killed_at
        # and they flow again: one webhook for an order of each orphaned partition
        sent = 0
        for n in range(1000):
            order_id = f"after-{n}"
            if int(topology.webhook_subject_for(order_id).rsplit(".", 1)[1]) in orphaned and sent < len(orphaned):
                await publish_webhook(js, topology, order_payload(order_id, 0), f"wh-{order_id}")
                orphaned.discard(int(topology.webhook_subject_for(order_id).rsplit(".", 1)[1]))
                sent += 1
        await wait_until(lambda: _equal(audit_count(db), sent), timeout=WAIT_S, what="webhooks of moved partitions")
        applied = time.monotonic() - killed_at
        print(
            f"\nfailover with TTL 10 s / renew 2 s: partitions owned again after {taken:.2f} s, "
            f"a webhook applied after {applied:.2f} s"
        )
    finally:
        first.stop()
        second.stop()


async def _more_than(value, bound: int) -> bool:  # type: ignore[no-untyped-def]
    return await value > bound


async def _equal(value, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await value == expected


async def _taken_over(db: asyncpg.Connection, partitions: set[int], dead_pid: int | None) -> bool:
    held = await owners(db)
    return all(p in held and pid_of(held[p]) != dead_pid for p in partitions)


async def _shared(db: asyncpg.Connection, pids: set[int | None], partitions: int) -> bool:
    held = await owners(db)
    return len(held) == partitions and {pid_of(o) for o in held.values()} == pids


async def test_not_ready_while_the_leases_cannot_be_renewed(infra, database_url, topology, js, db):
    """A replica whose lease rounds fail stops its consumers once its leases must have expired, and /readyz
    says so; it recovers when the database answers again."""
    processor = Processor(
        settings_for(infra, database_url, topology, lease_ttl_s=1.0, lease_renew_s=0.2, db_query_timeout_s=0.5)
    )
    await processor.start()
    try:
        await wait_until(lambda: _ready(processor), what="ready with every partition")
        assert processor.partitions == list(range(topology.partitions))
        await db.execute("ALTER TABLE partition_leases RENAME TO partition_leases_away")  # every round fails
        await wait_until(lambda: _given_up(processor), what="not ready, no partition held")
        await db.execute("ALTER TABLE partition_leases_away RENAME TO partition_leases")
        await wait_until(lambda: _ready(processor), what="ready again")
        await publish_webhook(js, topology, order_payload("order-back", 0), "wh-back")
        await wait_until(lambda: _equal(audit_count(db), 1), what="applying again")
    finally:
        await processor.stop()


async def _given_up(processor: Processor) -> bool:
    return (await processor.readiness())["leases"] == "not renewed" and processor.partitions == []


async def _ready(processor: Processor) -> bool:
    checks = await processor.readiness()
    return all(v == "ok" for v in checks.values()) and len(processor.partitions) == processor.topology.partitions
