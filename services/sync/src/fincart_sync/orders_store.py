"""Reads of the ``orders`` table (the processor is the only writer)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator
from datetime import datetime
from uuid import UUID

import asyncpg
from fincart_core.contracts.events import OrderState

COLUMNS = (
    "id, shopify_order_id, status, total_price, shipping_fee, version, last_external_updated_at, "
    "last_webhook_id, created_at, updated_at"
)


class CursorError(ValueError):
    """A ``cursor`` that this service did not hand out."""


def encode_cursor(created_at: datetime, order_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(order_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, order_id = json.loads(raw)
        return datetime.fromisoformat(stamp), UUID(order_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise CursorError("cursor is not one this API returned (take next_cursor from a previous page)") from exc


def to_state(record: asyncpg.Record) -> OrderState:
    return OrderState.model_validate(dict(record))


class OrdersStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, shopify_order_id: str) -> OrderState | None:
        record = await self.pool.fetchrow(f"SELECT {COLUMNS} FROM orders WHERE shopify_order_id = $1", shopify_order_id)
        return to_state(record) if record else None

    async def page(
        self, limit: int, status: str | None = None, cursor: str | None = None
    ) -> tuple[list[OrderState], str | None]:
        """Newest order first: ``created_at`` desc, ``id`` desc as tie-break. Neither column changes after the
        insert, so an order updated while a client pages keeps its place: none is skipped or repeated.
        Returns the orders and the cursor of the next page (None on the last)."""
        where: list[str] = []
        args: list[object] = []
        if status:
            args.append(status)
            where.append(f"status = ${len(args)}")
        if cursor:
            stamp, order_id = decode_cursor(cursor)
            args += [stamp, order_id]
            where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        sql = (
            f"SELECT {COLUMNS} FROM orders {'WHERE ' + ' AND '.join(where) if where else ''} "
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
        )
        records = await self.pool.fetch(sql, *args)
        orders = [to_state(r) for r in records[:limit]]
        more = len(records) > limit
        return orders, (encode_cursor(orders[-1].created_at, orders[-1].id) if more else None)

    async def snapshot(
        self, page_size: int, order: str | None = None
    ) -> AsyncGenerator[tuple[list[OrderState], bool], None]:
        """All orders (or one) as (page, is_last), read in one REPEATABLE READ transaction so the pages
        agree with each other."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            if order is not None:
                record = await conn.fetchrow(f"SELECT {COLUMNS} FROM orders WHERE shopify_order_id = $1", order)
                yield ([to_state(record)] if record else []), True
                return
            cursor = await conn.cursor(f"SELECT {COLUMNS} FROM orders ORDER BY shopify_order_id")
            while True:
                records = await cursor.fetch(page_size)
                last = len(records) < page_size
                yield [to_state(r) for r in records], last
                if last:
                    return

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")
