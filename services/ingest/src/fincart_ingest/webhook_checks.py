"""Request checks, in the order the contract answers them: size (413), signature (401), id (400),
topic and body (422). Each failure is a :class:`Rejection` carrying its status and message.

Everything a signed body can hold that could not be published, parsed by the processor or stored is a 422
naming the field: NUL (U+0000; PostgreSQL text and jsonb cannot hold it), lone UTF-16 surrogates, nesting
deeper than MAX_NESTING, integers over Python's 4300 digits, NaN/Infinity, updated_at outside the range of
the contract (fincart_core.contracts.webhook.UPDATED_AT_MIN/MAX)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from fastapi import Request
from fincart_core.contracts.webhook import WEBHOOK_TOPICS, ShopifyOrder
from fincart_core.signing import verify
from pydantic import ValidationError
from starlette.requests import ClientDisconnect


@dataclass
class Rejection(Exception):
    status: int
    detail: str


async def read_body(request: Request, limit: int, declared: str | None) -> bytes:
    """The raw body (the HMAC is over these exact bytes), refusing more than ``limit`` bytes
    before reading when Content-Length (``declared``) says so, and while reading otherwise."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejection(413, f"body of {declared} bytes is over the {limit} byte limit")
    # ASGI messages read as Request.stream() does, without its async generator (~3 us per webhook)
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
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
        payload = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejection(422, f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # thousands of nested arrays fit in 1 MiB
        raise Rejection(422, f"body is not valid JSON: nested deeper than {MAX_NESTING} levels") from exc
    except ValueError as exc:  # an integer over Python's 4300 digits, NaN/Infinity, a float out of range
        raise Rejection(422, f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise Rejection(422, "body must be a JSON object (a Shopify order)")
    # most bodies skip the walk: in a UTF-8 body NUL can only be the escape \u0000 (JSON refuses raw control
    # characters), a lone surrogate only an escape or its UTF-8 bytes, and nesting needs as many brackets.
    # UTF-16/32 bodies hold zero bytes and are walked.
    if (
        b"\\u0000" in body
        or b"\x00" in body
        or _SURROGATE_ESCAPE.search(body)
        or body.count(b"[") + body.count(b"{") > MAX_NESTING
    ) and (found := _unpublishable(payload)) is not None:
        where, why = found
        raise Rejection(422, f"invalid field {where[:200]!r}: {why}")
    try:
        return ShopifyOrder.model_validate(payload), payload
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise Rejection(422, f"invalid field {field!r}: {first['msg']}") from exc


# Deeper bodies are refused: the stream message nests the order two levels down and pydantic's JSON parser,
# which the processor reads it with, stops at ~200 levels. Shopify orders nest fewer than 10.
MAX_NESTING = 100
# the escapes \uD800-\uDFFF, and their UTF-8 bytes (ED A0-BF xx), which json.loads decodes with surrogatepass
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    if _SURROGATE.search(text):
        return "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not valid unicode"
    return None


def _unpublishable(payload: dict[str, object]) -> tuple[str, str] | None:
    """The dotted path (pydantic's style) of the first key or value that cannot be published and stored, and
    why; else None. Iterative: a body may nest as deep as the JSON parser allows."""
    pending: list[tuple[str, object, int]] = [("", payload, 1)]
    while pending:
        path, value, depth = pending.pop()
        if isinstance(value, str):
            if problem := _string_problem(value):
                return path or "body", problem
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_NESTING:
            return path, f"nested deeper than {MAX_NESTING} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (problem := _string_problem(key)):
                return here, problem
            pending.append((here, item, depth + 1))
    return None
