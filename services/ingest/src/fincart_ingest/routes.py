"""POST /webhooks/shopify (thin: checks in webhook_checks, dedupe in dedupe, publishing in publisher)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fincart_core.contracts.webhook import ErrorResponse, WebhookAccepted, WebhookDuplicate, WebhookMessage
from fincart_core.ops import probe
from fincart_core.telemetry import extract_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from fincart_ingest import webhook_checks as checks
from fincart_ingest.dedupe import DedupeMarks
from fincart_ingest.metrics import DEDUPE_HITS, REQUESTS
from fincart_ingest.publisher import PublishFailed, TooLarge, WebhookPublisher
from fincart_ingest.settings import IngestSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fincart_ingest")


class RequestRoute(APIRoute):
    """A route whose endpoint takes the Request and answers its own Response: FastAPI documents it (response
    models, error answers) but skips dependency solving and response validation per request, ~20 us of the
    ~40 us it spent per webhook."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


RETRY_AFTER_S = "2"


@dataclass
class IngestContext:
    settings: IngestSettings
    publisher: WebhookPublisher
    dedupe: DedupeMarks
    body_limit: int  # FINCART_MAX_BODY_BYTES or the broker's max_payload minus the envelope, the smaller


# answered per status without a label lookup each time
_ANSWERED = {status: REQUESTS.labels(str(status)) for status in (200, 400, 401, 413, 422, 503)}


def _answer(status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> JSONResponse:
    """``body`` as the contract's models (WebhookAccepted, WebhookDuplicate, ErrorResponse) dump it, written out:
    building and dumping a pydantic model per answer cost more than the rest of the answer."""
    (_ANSWERED.get(status) or REQUESTS.labels(str(status))).inc()
    return JSONResponse(body, status_code=status, headers=headers)


def accepted(webhook_id: str) -> dict[str, str]:
    return {"status": "accepted", "webhookId": webhook_id}


def duplicate(webhook_id: str) -> dict[str, str]:
    return {"status": "duplicate", "webhookId": webhook_id, "message": DUPLICATE_MESSAGE}


def error(detail: str) -> dict[str, str]:
    return {"detail": detail}


DUPLICATE_MESSAGE = WebhookDuplicate.model_fields["message"].default


def add_webhook_route(app: FastAPI) -> None:
    # on the app's own router: an included router costs another ~5 us per request in matching
    app.router.add_api_route(
        "/webhooks/shopify",
        shopify_webhook,
        methods=["POST"],
        route_class_override=RequestRoute,
        response_model=WebhookAccepted | WebhookDuplicate,
        responses={code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 503)},
        tags=["webhooks"],
    )


async def shopify_webhook(request: Request) -> JSONResponse:
    """A 200 means the webhook is durably in JetStream (PubAck received); anything else stores nothing."""
    ctx: IngestContext = request.app.state.ingest
    # one pass over the raw headers (names come lower-cased; the first of repeated ones counts, as in Starlette's
    # Headers) instead of a scan of them per header read
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(request.scope["headers"])}
    with tracer.start_as_current_span("ingest webhook", context=extract_context(headers), kind=SpanKind.SERVER) as span:
        try:
            body = await checks.read_body(request, ctx.body_limit, headers.get("content-length"))
            checks.check_signature(body, ctx.settings.webhook_secret, headers.get("x-shopify-hmac-sha256"))
            webhook_id = checks.check_webhook_id(headers.get("x-shopify-webhook-id"))
            topic = checks.check_topic(headers.get("x-shopify-topic"))
            order, payload = checks.parse_order(body)
        except checks.Rejection as rejection:
            log.info(
                "webhook rejected",
                extra={
                    "status": rejection.status,
                    "error": rejection.detail,
                    "webhook_id": headers.get("x-shopify-webhook-id"),
                },
            )
            return _answer(rejection.status, error(rejection.detail))
        span.set_attributes({"fincart.webhook_id": webhook_id, "fincart.order_id": order.id})
        ids = {"webhook_id": webhook_id, "order_id": order.id}

        if await ctx.dedupe.seen(webhook_id):
            DEDUPE_HITS.inc()
            return _answer(200, duplicate(webhook_id))
        message = WebhookMessage(
            webhook_id=webhook_id,
            topic=topic,
            shop_domain=headers.get("x-shopify-shop-domain"),
            triggered_at=headers.get("x-shopify-triggered-at"),
            received_at=datetime.now(UTC),
            order=payload,
        )
        try:
            published = await ctx.publisher.publish(message, order.id)
        except TooLarge as exc:
            log.info("webhook rejected", extra={**ids, "status": 413, "error": str(exc)})
            return _answer(413, error(str(exc)))
        except PublishFailed as exc:
            log.warning("publish failed, answered 503", extra={**ids, "error": str(exc)})
            return _answer(503, error("webhook not stored, retry later"), {"Retry-After": RETRY_AFTER_S})
        first = await ctx.dedupe.mark(webhook_id)
        if published.duplicate or not first:
            DEDUPE_HITS.inc()
            return _answer(200, duplicate(webhook_id))
        log.info("webhook accepted", extra={**ids, "seq": published.stream_seq})
        return _answer(200, accepted(webhook_id))


async def readiness(request: Request) -> dict[str, str]:
    ctx: IngestContext = request.app.state.ingest
    return {
        "nats": "ok" if ctx.publisher.connected else "disconnected",
        # reported, not required: without Redis, JetStream's Nats-Msg-Id still dedupes
        "redis": await probe(ctx.dedupe.ping()),
    }
