"""The operational endpoints every FinCart HTTP service serves: /healthz, /readyz, /metrics."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from fincart_core.settings import CommonSettings
from fincart_core.telemetry import configure_logging, configure_tracing

OK = "ok"
S = TypeVar("S", bound=CommonSettings)


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


# A service's readiness: check name -> "ok" or the reason it is not ready.
ReadinessChecks = Callable[[Request], Awaitable[dict[str, str]]]


async def probe(check: Awaitable[object]) -> str:
    """Run one dependency check; any failure becomes a short reason instead of an exception."""
    try:
        await check
    except Exception as exc:  # not ready, whatever the cause; the reason goes into the answer
        return f"unreachable: {exc.__class__.__name__}"
    return OK


def ops_router(readiness: ReadinessChecks, required: frozenset[str] | None = None) -> APIRouter:
    """``required``: the checks that decide readiness (default all); others are only reported."""
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status=OK)

    @router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readyz(request: Request) -> Response:
        checks = await readiness(request)
        deciding = checks if required is None else {k: v for k, v in checks.items() if k in required}
        ok = all(v == OK for v in deciding.values())
        body = Health(status=OK if ok else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def service_settings(settings_class: type[S], program: str) -> S:
    """A service's settings from the environment, with its JSON logs and tracing set up; an invalid value is a
    message and exit code 2 (a configuration mistake, not a crash)."""
    try:
        settings = settings_class()
    except ValidationError as exc:
        print(f"{program}: invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(settings.log_level)
    configure_tracing(settings.service_name, settings.otel_exporter, settings.otel_file)
    return settings
