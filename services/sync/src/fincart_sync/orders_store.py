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


class StoreUnavailable(RuntimeError):
    """No pool connection within the acquire timeout, or the query outlived its timeout (answered 503)."""


# What a retry can outlive: a busy pool, a slow or restarting database.
UNAVAILABLE = (
    TimeoutError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.QueryCanceledError,
)


def to_state(record: asyncpg.Record) -> OrderState:
    return OrderState.model_validate(dict(record))


class OrdersStore:
    """Every read takes a pool connection for one statement only and waits at most ``acquire_timeout``
    for it, so no client (however slow) holds a connection and a busy pool answers fast."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"database busy or unavailable ({exc.__class__.__name__}), retry") from exc

    async def get(self, shopify_order_id: str) -> OrderState | None:
        records = await self._fetch(f"SELECT {COLUMNS} FROM orders WHERE shopify_order_id = $1", shopify_order_id)
        return to_state(records[0]) if records else None

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
        records = await self._fetch(sql, *args)
        orders = [to_state(r) for r in records[:limit]]
        more = len(records) > limit
        return orders, (encode_cursor(orders[-1].created_at, orders[-1].id) if more else None)

    async def snapshot(
        self, page_size: int, order: str | None = None
    ) -> AsyncGenerator[tuple[list[OrderState], bool], None]:
        """All orders (or one) as (page, is_last), in ``shopify_order_id`` keyset pages. Each page is one
        statement whose connection goes back to the pool before the page is yielded: a client that reads
        slowly never holds a connection or a transaction (and never holds back vacuum).

        Pages are read at different moments, but each one after the caller took the stream position S:
        every order reflects at least every event up to S (the processor commits before it publishes),
        and an order created meanwhile has an event after S. Orders are never deleted nor renamed, so
        keyset pages on the id miss none."""
        if order is not None:
            records = await self._fetch(f"SELECT {COLUMNS} FROM orders WHERE shopify_order_id = $1", order)
            yield [to_state(r) for r in records], True
            return
        after: str | None = None
        args: list[object]
        while True:
            if after is None:
                sql, args = f"SELECT {COLUMNS} FROM orders ORDER BY shopify_order_id LIMIT $1", [page_size + 1]
            else:
                sql = f"SELECT {COLUMNS} FROM orders WHERE shopify_order_id > $1 ORDER BY shopify_order_id LIMIT $2"
                args = [after, page_size + 1]
            records = await self._fetch(sql, *args)
            page = [to_state(r) for r in records[:page_size]]
            last = len(records) <= page_size
            yield page, last
            if last:
                return
            after = page[-1].shopify_order_id

    async def ping(self) -> None:
        await self._fetch("SELECT 1")
