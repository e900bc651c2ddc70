"""Wiring of the processor: the partition consumers plus /healthz, /readyz, /metrics;
``fincart-processor`` runs it (SIGTERM finishes the batches in flight)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fincart_core.gc_tuning import tune_gc
from fincart_core.ops import ops_router, service_settings

from fincart_processor.runner import Processor
from fincart_processor.settings import ProcessorSettings


async def readiness(request: Request) -> dict[str, str]:
    processor: Processor = request.app.state.processor
    return await processor.readiness()


def create_app(settings: ProcessorSettings | None = None) -> FastAPI:
    settings = settings or ProcessorSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        processor = Processor(settings)
        await processor.start()
        app.state.processor = processor
        try:
            yield
        finally:
            await processor.stop()

    app = FastAPI(title="FinCart processor", version="0.1.0", lifespan=lifespan)
    app.include_router(ops_router(readiness))
    return app


def main() -> None:
    settings = service_settings(ProcessorSettings, "fincart-processor")
    app = create_app(settings)
    tune_gc()
    # each service runs its own uvicorn with its own limits (self-contained services, env-only settings)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=25,
    )


if __name__ == "__main__":
    main()
