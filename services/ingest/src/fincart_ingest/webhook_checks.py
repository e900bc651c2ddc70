"""Request checks, in the order the contract answers them: size (413), signature (401), id (400),
topic and body (422). Each failure is a :class:`Rejection` carrying its status and message.

NUL (U+0000) is refused in the webhook id and anywhere in the body: PostgreSQL text and jsonb cannot hold
it, so such a webhook could never be stored and the processor would only dead-letter it after retries."""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import Request
from fincart_core.contracts.webhook import WEBHOOK_TOPICS, ShopifyOrder
from fincart_core.signing import verify
from pydantic import ValidationError


@dataclass
class Rejection(Exception):
    status: int
    detail: str


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (the HMAC is over these exact bytes), refusing more than ``limit`` bytes
    before reading when Content-Length says so, and while reading otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejection(413, f"body of {declared} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejection(413, f"body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def check_signature(body: bytes, secret: str, signature: str | None) -> None:
    if not signature:
        raise Rejection(401, "missing X-Shopify-Hmac-Sha256 header")
    if not verify(body, secret, signature):
        raise Rejection(401, "invalid X-Shopify-Hmac-Sha256 signature")


def check_webhook_id(webhook_id: str | None) -> str:
    webhook_id = (webhook_id or "").strip()
    if not webhook_id:
        raise Rejection(400, "missing X-Shopify-Webhook-Id header")
    if len(webhook_id) > 255:
        raise Rejection(400, "X-Shopify-Webhook-Id is longer than 255 characters")
    if "\x00" in webhook_id:  # uvicorn's parsers refuse it already; this holds under any ASGI server
        raise Rejection(400, "X-Shopify-Webhook-Id contains a NUL character")
    return webhook_id


def check_topic(topic: str | None) -> str:
    if topic is None or topic not in WEBHOOK_TOPICS:
        raise Rejection(422, f"X-Shopify-Topic {topic!r} is not one of {', '.join(WEBHOOK_TOPICS)}")
    return topic


def parse_order(body: bytes) -> tuple[ShopifyOrder, dict[str, object]]:
    """The validated order and the raw payload (kept whole, extra fields included)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejection(422, f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # thousands of nested arrays fit in 1 MiB
        raise Rejection(422, "body is not valid JSON: nested too deeply") from exc
    if not isinstance(payload, dict):
        raise Rejection(422, "body must be a JSON object (a Shopify order)")
    # in a UTF-8 body NUL can only be the escape \u0000 (JSON refuses raw control characters): most bodies
    # skip the walk; UTF-16/32 bodies hold zero bytes and are walked
    if (b"\\u0000" in body or b"\x00" in body) and (where := _nul_path(payload)) is not None:
        raise Rejection(422, f"invalid field {where[:200]!r}: contains a NUL character (\\u0000), which "
                             "PostgreSQL cannot store")
    try:
        return ShopifyOrder.model_validate(payload), payload
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise Rejection(422, f"invalid field {field!r}: {first['msg']}") from exc


def _nul_path(payload: dict[str, object]) -> str | None:
    """The dotted path (pydantic's style) of a key or string holding NUL, else None. Iterative: a
    body may nest as deep as the JSON parser allows."""
    pending: list[tuple[str, object]] = [("", payload)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            pending.append((here, item))
    return None
