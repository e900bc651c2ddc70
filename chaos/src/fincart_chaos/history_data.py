"""What the history checks read (fincart_chaos.history_checks): the stored rows and audit rows in full,
``GET /orders`` paged end to end, and ``GET /orders/{id}`` read as soon as an event arrives.

Every wait is bounded; a read API that cannot be reached is a problem noted in the report, not a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
from fincart_core.settings import to_asyncpg_url

from fincart_chaos.history_checks import AuditEntry, OrderColumns, PageItem, ReadBack, StoreView
from fincart_chaos.observer import ResumingObserver, Seen
from fincart_chaos.sync_endpoint import SyncEndpoint

DB_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0
PAGE_SIZE = 100
MAX_PAGES = 10_000
PROBE_QUEUE = 256  # events waiting for their read-back; beyond that they are counted as not probed
PROBE_WORKERS = 4
WALK_PAUSE_S = 0.5


def _columns(record: asyncpg.Record | dict[str, Any]) -> OrderColumns:
    return OrderColumns(
        status=record["status"],
        total_price=_decimal(record["total_price"]),
        shipping_fee=_decimal(record["shipping_fee"]),
        last_external_updated_at=record["last_external_updated_at"],
        last_webhook_id=record["last_webhook_id"],
    )


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


async def read_store(database_url: str, order_ids: Sequence[str], webhook_ids: Sequence[str] = ()) -> StoreView:
    """The rows of ``order_ids`` and the audit rows filed under them or naming one of ``webhook_ids``
    (a dead-lettered poison webhook may be filed under no known order)."""
    conn = await asyncpg.connect(to_asyncpg_url(database_url), timeout=DB_TIMEOUT_S)
    try:
        orders = await conn.fetch(
            "SELECT * FROM orders WHERE shopify_order_id = ANY($1::text[])", list(order_ids), timeout=DB_TIMEOUT_S
        )
        audit = await conn.fetch(
            "SELECT webhook_id, shopify_order_id, status, version FROM audit_log "
            "WHERE shopify_order_id = ANY($1::text[]) OR webhook_id = ANY($2::text[])",
            list(order_ids),
            list(webhook_ids),
            timeout=DB_TIMEOUT_S,
        )
    finally:
        await conn.close()
    return StoreView(
        rows={r["shopify_order_id"]: _columns(r) for r in orders},
        versions={r["shopify_order_id"]: r["version"] for r in orders},
        audit=[AuditEntry(a["webhook_id"], a["shopify_order_id"], a["status"], a["version"]) for a in audit],
    )


def page_size_for(orders: int) -> int:
    """Small enough that the test's orders span at least four pages: paging bugs live at page boundaries."""
    return max(2, min(PAGE_SIZE, orders // 4))


def _item(order: dict[str, Any]) -> PageItem:
    return PageItem(
        order["shopify_order_id"],
        order["version"],
        OrderColumns(
            status=order["status"],
            total_price=_decimal(order["total_price"]),
            shipping_fee=_decimal(order["shipping_fee"]),
            last_external_updated_at=datetime.fromisoformat(order["last_external_updated_at"]),
            last_webhook_id=order["last_webhook_id"],
        ),
    )


async def walk_orders(http: httpx.AsyncClient, page_size: int = PAGE_SIZE) -> list[PageItem]:
    """Every order ``GET /orders`` lists, following ``next_cursor`` to the last page."""
    items: list[PageItem] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        answer = await http.get("/orders", params={"limit": page_size, **({"cursor": cursor} if cursor else {})})
        answer.raise_for_status()
        page = answer.json()
        items.extend(_item(o) for o in page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items
    raise RuntimeError(f"GET /orders had more than {MAX_PAGES} pages")


@dataclass
class ReadApiEvidence:
    """Page walks (``during``: while the load ran; ``after``: once settled) and read-backs of events."""

    during: list[list[PageItem]] = field(default_factory=list)
    after: list[PageItem] | None = None
    reads: list[ReadBack] = field(default_factory=list)
    not_probed: int = 0
    problems: list[str] = field(default_factory=list)


class ReadApiProbe:
    """Reads through the sync service's HTTP API while the load runs: ``on_event`` (an observer's hook)
    queues a read-back of the event's order; ``walk_while`` pages through ``GET /orders`` again and
    again until told to stop."""

    def __init__(self, sync: SyncEndpoint, page_size: int = PAGE_SIZE) -> None:
        self.evidence = ReadApiEvidence()
        self._page_size = page_size
        self._http = sync.http(HTTP_TIMEOUT_S)
        self._queue: asyncio.Queue[Seen] = asyncio.Queue(PROBE_QUEUE)
        self._workers: list[asyncio.Task[None]] = []

    def on_event(self, seen: Seen) -> None:
        try:
            self._queue.put_nowait(seen)
        except asyncio.QueueFull:
            self.evidence.not_probed += 1

    async def start(self) -> None:
        self._workers = [asyncio.create_task(self._read_backs()) for _ in range(PROBE_WORKERS)]

    async def _read_backs(self) -> None:
        while True:
            seen = await self._queue.get()
            try:
                answer = await self._http.get(f"/orders/{quote(seen.order_id, safe='')}")
                version = answer.json()["version"] if answer.status_code == 200 else None
                if answer.status_code in (200, 404):
                    self.evidence.reads.append(ReadBack(seen.order_id, seen.version, version))
                else:
                    self._problem(f"GET /orders/{{id}} answered {answer.status_code}")
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self._problem(f"GET /orders/{{id}}: {type(exc).__name__}")

    async def walk_while(self, running: asyncio.Event) -> None:
        """Walks ``GET /orders`` until ``running`` is cleared."""
        while running.is_set():
            try:
                self.evidence.during.append(await walk_orders(self._http, self._page_size))
            except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
                self._problem(f"GET /orders walk during the load: {type(exc).__name__}: {exc}")
            await asyncio.sleep(WALK_PAUSE_S)

    async def finish(self) -> ReadApiEvidence:
        """Stop the read-backs, walk once more (the load is over and settled) and close."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        try:
            self.evidence.after = await walk_orders(self._http, self._page_size)
        except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
            self._problem(f"GET /orders walk after the load: {type(exc).__name__}: {exc}")
        await self._http.aclose()
        return self.evidence

    def _problem(self, text: str) -> None:
        if text not in self.evidence.problems:
            self.evidence.problems.append(text)


class ReadSide:
    """The read side of one run besides the steady observer: ``resuming`` observers that hang up and come
    back at random points, read-backs of every event the steady observer gets (``on_event``), and page
    walks through ``GET /orders`` while the load runs and once more at the end."""

    def __init__(self, sync: SyncEndpoint, *, orders: int, order: str | None, resuming: int, seed: int) -> None:
        self.probe = ReadApiProbe(sync, page_size_for(orders))
        self.resumers = [ResumingObserver(sync, seed=seed * 1000 + i, order=order) for i in range(resuming)]
        self._walking = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def on_event(self) -> Callable[[Seen], None]:
        return self.probe.on_event

    async def start(self) -> None:
        await self.probe.start()
        self._walking.set()
        self._tasks = [asyncio.create_task(r.run()) for r in self.resumers]
        self._tasks.append(asyncio.create_task(self.probe.walk_while(self._walking)))

    def load_done(self) -> None:
        self._walking.clear()

    async def finish(self, timeout: float) -> tuple[list[list[Seen]], ReadApiEvidence]:
        """Stop, let every resuming observer catch up to the stream's end, walk the settled orders once."""
        self._walking.clear()
        for resumer in self.resumers:
            await resumer.stop()
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)
        except TimeoutError:
            self.probe.evidence.problems.append("the read side did not stop in time")
        await asyncio.gather(*(r.catch_up(timeout) for r in self.resumers))
        evidence = await self.probe.finish()
        for resumer in self.resumers:
            evidence.problems.extend(resumer.problems[:2])
        return [r.log for r in self.resumers], evidence


async def final_walk(sync: SyncEndpoint, orders: int) -> tuple[list[PageItem] | None, list[str]]:
    """One walk through ``GET /orders`` (the verification Job's, after the load)."""
    async with sync.http(HTTP_TIMEOUT_S) as http:
        try:
            return await walk_orders(http, page_size_for(orders)), []
        except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
            return None, [f"GET /orders walk: {type(exc).__name__}: {exc}"]
