"""apply_batch against real PostgreSQL == the one-at-a-time reference model (hypothesis, fewer examples).

Each example uses its own order and webhook ids inside one migrated database, so examples never see
each other's rows and no database is created per example."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import asyncpg
from fincart_core.settings import to_asyncpg_url
from fincart_processor.decisions import Webhook
from fincart_processor.order_store import apply_batch
from hypothesis import HealthCheck, given, settings

from tests.support.processor_model import Model, Row, deliveries

_examples = itertools.count()


def _namespaced(batches: list[list[Webhook]], ns: str) -> list[list[Webhook]]:
    return [
        [replace(w, webhook_id=f"{ns}-{w.webhook_id}", order_id=f"{ns}-{w.order_id}") for w in batch]
        for batch in batches
    ]


async def _run(url: str, batches: list[list[Webhook]], ns: str) -> tuple[Model, dict[str, list]]:
    """Apply the batches, then read back rows and audit as the model shapes them, plus the events."""
    conn = await asyncpg.connect(url)
    actual = Model()
    published: dict[str, list] = {"new": [], "all": []}
    try:
        for batch in batches:
            plan, events = await apply_batch(conn, batch, None)
            published["new"] += [(a.webhook.order_id, a.version, a.webhook.webhook_id) for a in plan.applied]
            published["all"] += [
                (
                    e.order.shopify_order_id,
                    e.order.version,
                    e.order.last_webhook_id,
                    e.order.last_external_updated_at,
                    e.order.status,
                    e.order.total_price,
                    e.order.shipping_fee,
                )
                for e in events
            ]
        for r in await conn.fetch("SELECT * FROM orders WHERE shopify_order_id LIKE $1", f"{ns}-%"):
            actual.rows[r["shopify_order_id"]] = Row(
                r["version"],
                r["last_external_updated_at"],
                r["last_webhook_id"],
                r["status"],
                r["total_price"],
                r["shipping_fee"],
            )
        for r in await conn.fetch("SELECT * FROM audit_log WHERE webhook_id LIKE $1", f"{ns}-%"):
            actual.audit[r["webhook_id"]] = (r["status"], r["version"])
    finally:
        await conn.close()
    return actual, published


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=deliveries(max_webhooks=25, max_deliveries=50))
def test_apply_batch_equals_one_by_one(database_url: str, batches: list[list[Webhook]]) -> None:
    ns = f"x{next(_examples)}"
    batches = _namespaced(batches, ns)
    reference = Model()
    contents: dict[tuple[str, int], tuple] = {}
    for batch in batches:
        for w in batch:
            reference.apply(w)
            if reference.events and reference.events[-1][2] == w.webhook_id:
                contents[reference.events[-1][:2]] = (w.updated_at, w.status, w.total_price, w.shipping_fee)
    actual, published = asyncio.run(_run(to_asyncpg_url(database_url), batches, ns))
    assert actual.rows == reference.rows
    assert actual.audit == reference.audit
    assert published["new"] == reference.events
    # every event carries the state of the version it announces, re-published ones included
    expected = {(o, v, w, *contents[(o, v)]) for o, v, w in reference.events + reference.republished}
    assert set(published["all"]) == expected
