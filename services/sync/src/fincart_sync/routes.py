"""HTTP and WebSocket routes (thin: the work is in orders_store, session and the hub)."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from fincart_core.contracts.events import OrderState, OrderStatus
from fincart_core.ops import OK, probe
from pydantic import BaseModel

from fincart_sync.auth import require_reader
from fincart_sync.orders_store import CursorError, OrdersStore
from fincart_sync.session import Session, SyncContext

router = APIRouter()


class ErrorBody(BaseModel):
    detail: str


READER = [Depends(require_reader)]
UNAUTHORIZED: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "missing or invalid bearer token"}
}


class OrdersPage(BaseModel):
    items: list[OrderState]
    next_cursor: str | None = None


def _ctx(request: Request | WebSocket) -> SyncContext:
    ctx: SyncContext = request.app.state.sync
    return ctx


def _store(request: Request) -> OrdersStore:
    return _ctx(request).store


@router.get(
    "/orders",
    response_model=OrdersPage,
    tags=["orders"],
    dependencies=READER,
    responses={400: {"model": ErrorBody}, **UNAUTHORIZED, 503: {"model": ErrorBody}},
)
async def list_orders(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500, description="Orders per page")] = 50,
    status: Annotated[OrderStatus | None, Query(description="Only orders with this status")] = None,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> OrdersPage:
    """Orders, newest first by creation (``created_at`` desc, then ``id`` desc), in keyset pages: pass
    ``next_cursor`` back as ``cursor``. Both keys are fixed when an order is created, so orders updated
    while a client pages keep their place: none is skipped or repeated. An order created after the first
    page comes before it (start again from the first page to see it; `/sync` streams every change)."""
    try:
        items, next_cursor = await _store(request).page(limit, status, cursor)
    except CursorError as exc:
        raise HTTPException(400, str(exc)) from exc
    return OrdersPage(items=items, next_cursor=next_cursor)


@router.get(
    "/orders/{shopify_order_id}",
    response_model=OrderState,
    tags=["orders"],
    dependencies=READER,
    responses={**UNAUTHORIZED, 404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def get_order(request: Request, shopify_order_id: str) -> OrderState:
    order = await _store(request).get(shopify_order_id)
    if order is None:
        raise HTTPException(404, f"order {shopify_order_id!r} not found")
    return order


@router.websocket("/sync")
async def sync_socket(websocket: WebSocket) -> None:
    """Snapshot + live events; protocol in fincart_sync.protocol."""
    await Session(websocket, _ctx(websocket)).run()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def live_page() -> HTMLResponse:
    page = resources.files("fincart_sync").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A busy or unreachable database: 503 with a reason, never a hang (see OrdersStore)."""
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


async def readiness(request: Request) -> dict[str, str]:
    return {
        "nats": OK if request.app.state.feed.subscribed else "not subscribed to events",
        "postgres": await probe(_ctx(request).store.ping()),
    }
