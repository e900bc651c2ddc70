"""Wiring of the sync service: settings, Postgres pool, NATS feed, hub, routes; ``fincart-sync`` runs it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import uvicorn
from fastapi import FastAPI
from fincart_core.ops import ops_router, service_settings
from fincart_core.partition import Topology
from fincart_core.streams import connect, ensure_streams

from fincart_sync.admission import ConnectionCaps
from fincart_sync.event_feed import EventFeed
from fincart_sync.hub import Hub
from fincart_sync.orders_store import OrdersStore, StoreUnavailable
from fincart_sync.routes import readiness, router, store_unavailable
from fincart_sync.session import SyncContext
from fincart_sync.settings import SyncSettings

log = logging.getLogger(__name__)


def create_app(settings: SyncSettings | None = None) -> FastAPI:
    settings = settings or SyncSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topology = Topology(settings.partitions, settings.nats_prefix)
        hub = Hub()
        feed: EventFeed | None = None

        async def reconnected() -> None:
            if feed is not None:
                feed.resubscribe()

        pool = await asyncpg.create_pool(
            settings.asyncpg_url,
            min_size=1,
            max_size=settings.db_pool_size,
            command_timeout=settings.db_query_timeout_s,
        )
        nc = await connect(settings.nats_url, settings.service_name, reconnected_cb=reconnected)
        try:
            js = nc.jetstream()
            await ensure_streams(js, topology)
            feed = EventFeed(nc, topology, hub)
            await feed.start()
            app.state.feed = feed
            app.state.sync = SyncContext(
                hub=hub,
                js=js,
                topology=topology,
                store=OrdersStore(pool, settings.db_acquire_timeout_s),
                settings=settings,
                caps=ConnectionCaps(settings.ws_max_connections, settings.ws_max_connections_per_token),
            )
            log.info("sync ready", extra={"service": settings.service_name, "seq": hub.last_seq})
            yield
        finally:
            if feed is not None:
                await feed.stop()
            await nc.drain()
            await pool.close()

    app = FastAPI(
        title="FinCart sync",
        version="0.1.0",
        lifespan=lifespan,
        description="Live orders over WebSocket (/sync, protocol in fincart_sync.protocol), read API, live page. "
        "/orders* and /sync need a read token (Authorization: Bearer <token>).",
    )
    app.add_exception_handler(StoreUnavailable, store_unavailable)
    app.include_router(router)
    app.include_router(ops_router(readiness))
    return app


def main() -> None:
    settings = service_settings(SyncSettings, "fincart-sync")
    # each service runs its own uvicorn with its own limits (self-contained services, env-only settings)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        ws_per_message_deflate=False,  # compressing every frame for every client costs more CPU than it saves
        ws_max_size=settings.ws_max_message_bytes,  # clients only send pings: a 16 MiB default invites abuse
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
