"""The snapshot reads page by page, each page on a connection that is back in the pool before the page
is sent: orders changed or created between pages are neither lost nor repeated."""

from __future__ import annotations

import asyncpg
from fincart_core.settings import to_asyncpg_url
from fincart_sync.orders_store import OrdersStore
from test_sync_service import Events, order_state


async def test_pages_read_while_orders_change(database_url, db, js, topology):
    events = Events(js, topology, db)
    ids = [f"o{i:02d}" for i in range(10)]
    for oid in ids:
        await events.publish_row(order_state(oid, 1))
    pool = await asyncpg.create_pool(to_asyncpg_url(database_url), min_size=1, max_size=1)
    try:
        store = OrdersStore(pool, acquire_timeout=5)
        pages = store.snapshot(3)
        first, last = await anext(pages)
        assert [o.shopify_order_id for o in first] == ids[:3] and not last
        # the only pool connection is free while the client holds the page: these would block otherwise
        assert len((await store.page(50))[0]) == 10
        for oid, version in (("o01", 2), ("o05", 2)):  # one already sent, one still to come
            await events.publish_row(order_state(oid, version))
        await events.publish_row(order_state("o00a", 1))  # created behind the cursor: comes as a live event
        await events.publish_row(order_state("o04a", 1))  # created ahead of it: in a later page
        rest = [o async for page, _ in pages for o in page]
    finally:
        await pool.close()
    got = [o.shopify_order_id for o in first + rest]
    assert got == sorted({*ids, "o04a"}) and len(got) == len(set(got))
    versions = {o.shopify_order_id: o.version for o in first + rest}
    assert versions["o01"] == 1 and versions["o05"] == 2
