"""The same-work baseline: the least code that does per batch what the processor does, with the same libraries.

One task per partition: pull a batch from the partition's durable consumer (nats-py's ``fetch``), one
transaction with the processor's guarded unnest upsert (``UPSERT_ORDERS``: the newest webhook of each order
in the batch, by (updated_at, webhook id)) and its audit rows (``INSERT_AUDIT``), publish one change event
per webhook and wait for every PubAck, ack the batch. No pydantic models, tracing, metrics, leases, row
locks, redelivery checks, poison isolation or recovery: what is left is the floor of the processor's work.

``--ack all`` creates the consumers with AckAll and acks only the last message of a batch (the processor's
default); ``--ack each`` acks every message (FINCART_ACK_POLICY=explicit). Runs until SIGTERM; prints
``ready`` once connected.

    python benchmarks/same_work.py --database-url ... --nats-url ... --prefix ... --partitions 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from datetime import datetime
from decimal import Decimal

import asyncpg
import nats
from fincart_core.domain import order_status, shipping_fee
from fincart_core.partition import Topology
from fincart_core.settings import to_asyncpg_url
from fincart_processor.order_store import INSERT_AUDIT, UPSERT_ORDERS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


def row(data: bytes) -> tuple[object, ...]:
    """(order id, status, total, shipping fee, updated_at, webhook id, received_at) of a stream message."""
    message = json.loads(data)
    order = message["order"]
    total = Decimal(order["total_price"]) if order.get("total_price") is not None else None
    return (
        order["id"],
        order_status(order.get("financial_status"), order.get("fulfillment_status")),
        total,
        shipping_fee(total),
        datetime.fromisoformat(order["updated_at"]),
        message["webhook_id"],
        datetime.fromisoformat(message["received_at"]),
    )


async def apply(pool: asyncpg.Pool, rows: list[tuple]) -> None:
    newest: dict[str, tuple] = {}
    for r in rows:
        if r[0] not in newest or (r[4], r[5]) > (newest[r[0]][4], newest[r[0]][5]):
            newest[r[0]] = r
    async with pool.acquire() as conn, conn.transaction():
        await conn.fetch(
            UPSERT_ORDERS,
            *map(list, zip(*[(o, s, t, f, 1, u, w) for o, s, t, f, u, w, _ in newest.values()], strict=True)),
        )
        await conn.execute(
            INSERT_AUDIT,
            *map(list, zip(*[(w, o, "processed", None, 1, u, r) for o, _, _, _, u, w, r in rows], strict=True)),
        )


async def partition(js, pool: asyncpg.Pool, topology: Topology, p: int, batch: int, ack_all: bool) -> None:  # type: ignore[no-untyped-def]
    durable = topology.consumer_name(p)
    sub = await js.pull_subscribe(
        topology.webhook_subject(p),
        durable=durable,
        stream=topology.orders_stream,
        config=ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=batch,
            ack_policy=AckPolicy.ALL if ack_all else AckPolicy.EXPLICIT,
        ),
    )
    while True:
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except TimeoutError:
            continue
        rows = [row(m.data) for m in msgs]
        await apply(pool, rows)
        await asyncio.gather(
            *(
                js.publish(
                    topology.event_subject_for(r[0]),
                    json.dumps(
                        {
                            "type": "order.updated",
                            "order": {
                                "shopify_order_id": r[0],
                                "status": r[1],
                                "total_price": str(r[2]),
                                "last_external_updated_at": r[4].isoformat(),
                                "last_webhook_id": r[5],
                            },
                        }
                    ).encode(),
                    headers={"Nats-Msg-Id": r[5]},
                )
                for r in rows
            )
        )
        for m in msgs[-1:] if ack_all else msgs:
            await m.ack()


async def main(args: argparse.Namespace) -> None:
    topology = Topology(args.partitions, args.prefix)
    nc = await nats.connect(args.nats_url.split(","))
    pool = await asyncpg.create_pool(to_asyncpg_url(args.database_url), min_size=args.pool, max_size=args.pool)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    tasks = [
        asyncio.create_task(partition(nc.jetstream(), pool, topology, p, args.batch, args.ack == "all"))
        for p in range(args.partitions)
    ]
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for task in tasks:  # a failed partition task is a failed baseline: its error goes to the log
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()  # type: ignore[misc]
    await pool.close()
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--ack", choices=("each", "all"), default="each")
    asyncio.run(main(parser.parse_args()))
