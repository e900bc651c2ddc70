"""Wiring of the ingest service: settings, NATS, Redis, routes; ``fincart-ingest`` runs it."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from fincart_core.gc_tuning import tune_gc
from fincart_core.ops import ops_router, service_settings
from fincart_core.partition import Topology
from fincart_core.streams import StreamLimits, connect, ensure_streams

from fincart_ingest.dedupe import DedupeMarks
from fincart_ingest.publisher import WebhookPublisher
from fincart_ingest.routes import IngestContext, add_webhook_route, readiness
from fincart_ingest.settings import IngestSettings

log = logging.getLogger(__name__)
MIN_BODY_BYTES = 1024  # the floor of FINCART_MAX_BODY_BYTES


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    if not settings.webhook_secret:
        raise ValueError("FINCART_WEBHOOK_SECRET is empty: ingest cannot verify webhook signatures")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topology = Topology(settings.partitions, settings.nats_prefix)
        nc = await connect(settings.nats_url, settings.service_name)
        # a blocking pool: a burst beyond the pool waits (bounded) for a connection instead of failing
        redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=settings.redis_max_connections,
                timeout=settings.redis_timeout_s,
                socket_timeout=settings.redis_timeout_s,
                socket_connect_timeout=settings.redis_timeout_s,
            )
        )
        try:
            js = nc.jetstream()
            await ensure_streams(js, topology, StreamLimits.from_settings(settings))
            publisher = WebhookPublisher(nc, topology, settings.publish_timeout_s)
            await publisher.start()
            body_limit = publisher.body_limit(settings.max_body_bytes)
            if body_limit < MIN_BODY_BYTES:
                raise RuntimeError(
                    f"the broker's max_payload of {nc.max_payload} bytes leaves {body_limit} bytes "
                    "for a webhook body: raise max_payload in the NATS server config"
                )
            app.state.ingest = IngestContext(
                settings=settings,
                publisher=publisher,
                body_limit=body_limit,
                dedupe=DedupeMarks(redis, settings.dedupe_ttl_seconds, settings.nats_prefix),
            )
            log.info(
                "ingest ready",
                extra={"service": settings.service_name, "body_limit": body_limit, "max_payload": nc.max_payload},
            )
            yield
        finally:
            await nc.drain()
            await redis.aclose()

    app = FastAPI(
        title="FinCart ingest",
        version="0.1.0",
        lifespan=lifespan,
        description="Signed Shopify order webhooks into JetStream. A 200 means durably stored.",
        # FastAPI's own spans (HTTP + dependencies/endpoint/serialization) would duplicate the route's span, which
        # is the one continuing the sender's trace into NATS; they cost ~15 % of ingest's CPU per webhook
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    add_webhook_route(app)
    app.include_router(ops_router(readiness, required=frozenset({"nats"})))
    return app


def main() -> None:
    settings = service_settings(IngestSettings, "fincart-ingest")
    try:
        app = create_app(settings)
    except ValueError as exc:
        print(f"fincart-ingest: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    tune_gc()
    # access_log off: configure_logging silences uvicorn.access anyway, but uvicorn still formats each line's args
    # each service runs its own uvicorn with its own limits (self-contained services, env-only settings)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
