"""Poison never blocks a partition (real NATS JetStream and PostgreSQL): a message that can never be applied is
isolated by splitting its batch, audited ``failed``, dead-lettered, and everything around it is applied in
stream order; the partition keeps flowing."""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from datetime import timedelta

import asyncpg
import nats
from fincart_core.contracts.webhook import UPDATED_AT_MAX, UPDATED_AT_MIN
from fincart_core.db.admin import drop_database, ensure_database, with_database
from fincart_core.db.migrate import upgrade
from fincart_core.partition import Topology, partition_for
from fincart_core.settings import to_asyncpg_url
from fincart_core.streams import delete_streams, ensure_streams
from fincart_processor.runner import Processor
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.integration.test_processor_service import WAIT_S, check_history, settings_for, wait_until
from tests.support.webhooks import BASE, order_payload, publish_webhook

_examples = itertools.count()
# no UTC equivalent in Python: outside the order contract's updated_at range, which the processor parses with
CALENDAR_EDGES = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00")


def orders_of(topology: Topology, partition: int, count: int, ns: str) -> list[str]:
    candidates = (f"{ns}-order-{i}" for i in itertools.count())
    return list(itertools.islice((o for o in candidates if partition_for(o, topology.partitions) == partition), count))


def refused_by_the_database(ns: str) -> str:
    """A webhook id that parses but that no index can hold (random hex beyond PostgreSQL's btree row limit,
    SQLSTATE 54000): the batch transaction fails, every time, in the database."""
    return f"{ns}-poison-{secrets.token_hex(6000)}"


def updates_of(orders: list[str], updates: int, rng: random.Random) -> list[tuple[str, int]]:
    """Every update of every order, shuffled (out of order)."""
    sends = [(o, i) for o in orders for i in range(updates)]
    rng.shuffle(sends)
    return sends


async def publish_update(js, topology, order_id: str, i: int) -> str:  # type: ignore[no-untyped-def]
    """The i-th update of an order (pairs share a timestamp: the id decides); returns its webhook id."""
    webhook_id = f"wh-{order_id}-{i:03d}"
    await publish_webhook(js, topology, order_payload(order_id, i, BASE + timedelta(seconds=i // 2)), webhook_id)
    return webhook_id


def expected_final(ids: list[str]) -> dict[str, tuple]:
    """The greatest (updated_at, webhook id) per order of the webhooks ``publish_update`` sent."""
    final: dict[str, tuple] = {}
    for webhook_id in ids:
        order_id, i = webhook_id[3:].rsplit("-", 1)
        pair = (BASE + timedelta(seconds=int(i) // 2), webhook_id)
        final[order_id] = max(final.get(order_id, pair), pair)
    return final


async def dead_letters(js, topology) -> dict[str, tuple[bytes, str]]:  # type: ignore[no-untyped-def]
    info = await js.stream_info(topology.dlq_stream)
    msgs = (
        [await js.get_msg(topology.dlq_stream, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]
        if info.state.messages
        else []
    )
    return {m.headers["Nats-Msg-Id"][:504]: (m.data, m.headers["Fincart-Error"]) for m in msgs}


async def one_poison_in_a_full_batch(infra, database_url: str, position: int) -> None:  # type: ignore[no-untyped-def]
    ns = f"p{next(_examples)}{secrets.token_hex(3)}"
    topology = Topology(partitions=2, prefix=ns)
    database_url = with_database(infra.database_url, f"{database_url.rsplit('/', 1)[1][:40]}_{ns}")
    await ensure_database(database_url)  # each example its own: check_history reads every row
    upgrade(database_url)
    nc = await nats.connect(infra.nats_url)
    db = await asyncpg.connect(to_asyncpg_url(database_url))
    processor = Processor(settings_for(infra, database_url, topology, batch_size=500))
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology)
        sends = updates_of(orders_of(topology, 0, 50, ns), 10, random.Random(position))
        poison = refused_by_the_database(ns)
        ids = [await publish_update(js, topology, o, i) for o, i in sends[:position]]
        await publish_webhook(js, topology, order_payload(sends[0][0], 99, BASE + timedelta(days=1)), poison)
        ids += [await publish_update(js, topology, o, i) for o, i in sends[position:]]
        await processor.start()
        await wait_until(lambda: _audited(db, ns, 500), what="the batch of 500 audited")
        # the partition keeps flowing
        orders = sorted({o for o, _ in sends})
        later = [await publish_update(js, topology, o, 10 + i) for o, i in updates_of(orders[:5], 2, random.Random(0))]
        await wait_until(lambda: _audited(db, ns, 510), what="later webhooks of the partition applied")
        await processor.wait_drained(WAIT_S)
        failed = await db.fetch(
            "SELECT webhook_id, message FROM audit_log WHERE status = 'failed' AND webhook_id LIKE $1", f"{ns}-%"
        )
        assert [r["webhook_id"] for r in failed] == [poison[:500]]
        assert "ProgramLimitExceeded" in failed[0]["message"]
        assert set(await dead_letters(js, topology)) == {f"dlq:{poison}"[:504]}
        await check_history(db, js, topology, expected_final(ids + later), failed=[poison])
    finally:
        await processor.stop()
        await db.close()
        await nc.close()
        await delete_streams(infra.nats_url, topology)
        await drop_database(database_url)


async def _audited(db: asyncpg.Connection, ns: str, count: int) -> bool:
    return await db.fetchval("SELECT count(*) FROM audit_log WHERE webhook_id LIKE $1", f"%{ns}-%") >= count


# few examples, no shrinking: each one runs a processor over 510 webhooks
@settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(position=st.integers(0, 499))
@example(position=0)
@example(position=499)
def test_one_poison_anywhere_in_a_batch_of_500(infra, database_url: str, position: int) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(one_poison_in_a_full_batch(infra, database_url, position))


async def test_poison_in_one_partition_while_the_others_are_busy(infra, database_url, topology, js, db):
    rng = random.Random(17)
    orders = [f"order-{i}" for i in range(40)]
    sends = updates_of(orders, 15, rng)
    victim = orders_of(topology, 1, 1, "busy")[0]
    poison = {
        rng.randrange(len(sends)): "refused",
        rng.randrange(len(sends)): "unparseable",
        rng.randrange(len(sends)): "calendar",
    }
    ids, failed = [], []
    for n, (order_id, i) in enumerate(sends):
        if (kind := poison.get(n)) == "refused":
            failed.append(refused_by_the_database("busy"))
            await publish_webhook(js, topology, order_payload(victim, 1), failed[-1])
        elif kind == "unparseable":
            failed.append("busy-not-json")
            await js.publish(topology.webhook_subject(1), b'{"webhook_id": ', headers={"Nats-Msg-Id": failed[-1]})
        elif kind == "calendar":
            failed.append("busy-calendar")
            await publish_webhook(
                js, topology, {**order_payload(victim, 2), "updated_at": CALENDAR_EDGES[0]}, failed[-1]
            )
        ids.append(await publish_update(js, topology, order_id, i))
    processor = Processor(settings_for(infra, database_url, topology, batch_size=50))
    await processor.start()
    try:
        await wait_until(lambda: _audited(db, "", len(sends) + len(failed)), what="every webhook audited")
        await processor.wait_drained(WAIT_S)
    finally:
        await processor.stop()
    assert set(await dead_letters(js, topology)) == {f"dlq:{f}"[:504] for f in failed}
    await check_history(db, js, topology, expected_final(ids), failed=failed)


async def test_calendar_edge_timestamps_past_ingest_are_dead_lettered(infra, database_url, topology, js, db):
    """Bodies whose updated_at has no UTC equivalent, published straight onto the stream (as if ingest had
    let them through): failed and dead-lettered; the later webhooks of that partition are applied."""
    order_id = orders_of(topology, 2, 1, "edge")[0]
    for n, updated_at in enumerate(CALENDAR_EDGES):
        await publish_webhook(js, topology, {**order_payload(order_id, 0), "updated_at": updated_at}, f"edge-{n}")
    ids = [await publish_update(js, topology, order_id, i) for i in range(1, 4)]
    processor = Processor(settings_for(infra, database_url, topology))
    await processor.start()
    try:
        await wait_until(lambda: _audited(db, "", 5), what="edges failed and later webhooks applied")
        await processor.wait_drained(WAIT_S)
    finally:
        await processor.stop()
    failed = dict(await db.fetch("SELECT webhook_id, message FROM audit_log WHERE status = 'failed'"))
    assert set(failed) == {"edge-0", "edge-1"}
    # refused by the shared order contract (as ingest refuses them), before any conversion could overflow
    in_range = f"must be between {UPDATED_AT_MIN:%Y-%m-%d} and {UPDATED_AT_MAX:%Y-%m-%d} in UTC"
    assert all(in_range in message for message in failed.values()), failed
    dead = await dead_letters(js, topology)
    assert set(dead) == {"dlq:edge-0", "dlq:edge-1"} and all("updated_at" in error for _, error in dead.values())
    await check_history(db, js, topology, expected_final(ids), failed=["edge-0", "edge-1"])
    assert await db.fetchval("SELECT version FROM orders WHERE shopify_order_id = $1", order_id) == 3
