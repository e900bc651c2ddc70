"""Applies a batch to PostgreSQL in one transaction with set-based SQL, as decided by ``decisions``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg
from fincart_core.contracts.events import OrderEvent, OrderState

from fincart_processor.decisions import Applied, Plan, Stored, Webhook, plan_batch
from fincart_processor.lease_store import Fence

# Rows are locked in a stable order so that two writers of overlapping batches cannot deadlock.
LOCK_ORDERS = """
SELECT shopify_order_id, id, version, last_external_updated_at, last_webhook_id, created_at
FROM orders WHERE shopify_order_id = ANY($1::text[]) ORDER BY shopify_order_id FOR UPDATE
"""
AUDITED = "SELECT webhook_id, version, created_at FROM audit_log WHERE webhook_id = ANY($1::text[])"
# The WHERE guard keeps a stale writer (a replica that lost its partition) from going backwards; the ids
# compare with COLLATE "C" (code point order) exactly like Python's str comparison in decisions.py.
UPSERT_ORDERS = """
INSERT INTO orders (id, shopify_order_id, status, total_price, shipping_fee, version,
                    last_external_updated_at, last_webhook_id)
SELECT gen_random_uuid(), u.* FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::int[],
                                          $6::timestamptz[], $7::text[]) AS u
ON CONFLICT (shopify_order_id) DO UPDATE SET
    status = excluded.status, total_price = excluded.total_price, shipping_fee = excluded.shipping_fee,
    version = excluded.version, last_external_updated_at = excluded.last_external_updated_at,
    last_webhook_id = excluded.last_webhook_id, updated_at = now()
WHERE (excluded.last_external_updated_at, excluded.last_webhook_id COLLATE "C")
    > (orders.last_external_updated_at, orders.last_webhook_id COLLATE "C")
RETURNING shopify_order_id, id, created_at, updated_at
"""
INSERT_AUDIT = """
INSERT INTO audit_log (webhook_id, shopify_order_id, status, message, version, external_updated_at, received_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[],
                     $7::timestamptz[])
ON CONFLICT (webhook_id) DO NOTHING
"""
DISCARDED_MESSAGE = "not newer than the stored (updated_at, webhook id)"


class ConcurrentWrite(RuntimeError):
    """Another writer changed an order inside this batch's window (transient: the batch is retried)."""


def _columns(rows: Iterable[tuple[object, ...]]) -> list[list[object]]:
    """Rows -> one array per column, the shape ``unnest`` takes."""
    return [list(column) for column in zip(*rows, strict=True)]


def _event(applied: Applied, row: asyncpg.Record, updated_at: datetime) -> OrderEvent:
    w = applied.webhook
    return OrderEvent(
        order=OrderState(
            id=row["id"],
            shopify_order_id=w.order_id,
            status=w.status,
            total_price=w.total_price,
            shipping_fee=w.shipping_fee,
            version=applied.version,
            last_external_updated_at=w.updated_at,
            last_webhook_id=w.webhook_id,
            created_at=row["created_at"],
            updated_at=updated_at,
        ),
        received_at=w.received_at,
    )


async def apply_batch(
    conn: asyncpg.Connection, webhooks: Sequence[Webhook], fence: Fence | None
) -> tuple[Plan, list[OrderEvent]]:
    """One transaction: check the partition's lease (``fence``; None only where nothing else can write, as in
    tests), lock the orders, decide, upsert the final row per order, write the audit rows.
    Returns the plan and the events to publish after commit (applied versions, then redeliveries)."""
    async with conn.transaction():
        if fence is not None:
            await fence.check(conn)
        rows = {r["shopify_order_id"]: r for r in await conn.fetch(LOCK_ORDERS, sorted({w.order_id for w in webhooks}))}
        audited = {r["webhook_id"]: r for r in await conn.fetch(AUDITED, [w.webhook_id for w in webhooks])}
        stored = {k: Stored(r["version"], r["last_external_updated_at"], r["last_webhook_id"]) for k, r in rows.items()}
        plan = plan_batch(webhooks, stored, {k: r["version"] for k, r in audited.items()})
        final = list(plan.final_per_order().values())
        upserted = (
            {
                r["shopify_order_id"]: r
                for r in await conn.fetch(
                    UPSERT_ORDERS,
                    *_columns(
                        (
                            a.webhook.order_id,
                            a.webhook.status,
                            a.webhook.total_price,
                            a.webhook.shipping_fee,
                            a.version,
                            a.webhook.updated_at,
                            a.webhook.webhook_id,
                        )
                        for a in final
                    ),
                )
            }
            if final
            else {}
        )
        if len(upserted) != len(final):
            raise ConcurrentWrite(f"{len(final) - len(upserted)} orders changed under this batch")
        if plan.audit:
            await conn.execute(
                INSERT_AUDIT,
                *_columns(
                    (
                        w.webhook_id,
                        w.order_id,
                        status,
                        None if status == "processed" else DISCARDED_MESSAGE,
                        version,
                        w.updated_at,
                        w.received_at,
                    )
                    for w, status, version in plan.audit
                ),
            )
    events = [_event(a, upserted[a.webhook.order_id], upserted[a.webhook.order_id]["updated_at"]) for a in plan.applied]
    # a redelivered webhook's event is rebuilt from the webhook, its audited version and the order row
    events += [
        _event(a, rows[a.webhook.order_id], audited[a.webhook.webhook_id]["created_at"])
        for a in plan.redelivered
        if a.webhook.order_id in rows
    ]
    return plan, events


async def record_failed(conn: asyncpg.Connection, webhook_id: str, order_id: str, message: str) -> None:
    """Audit a poison message as ``failed`` (once: a redelivery of it changes nothing). The texts are made
    storable first: the message may be poison precisely because of them (NUL, lone surrogates, a huge id)."""
    await conn.execute(
        INSERT_AUDIT,
        [_storable(webhook_id, 500)],
        [_storable(order_id, 500)],
        ["failed"],
        [_storable(message, 1000)],
        [None],
        [None],
        [None],
    )


def _storable(text: str, limit: int) -> str:
    """``text`` as PostgreSQL text can hold it (no NUL, valid UTF-8) and an index can (``limit`` characters)."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")[:limit]
