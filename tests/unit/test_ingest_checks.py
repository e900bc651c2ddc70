"""webhook_checks.parse_order over random bodies (hypothesis): a body is refused with a 422 that can be sent,
or it is accepted and then the processor parses its stream message to the same order (no poison)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fincart_core.contracts.webhook import WebhookMessage
from fincart_ingest import webhook_checks as checks
from fincart_processor.decisions import Webhook
from hypothesis import given, settings

from tests.support.webhook_bodies import BODIES


@settings(max_examples=1000, deadline=None)
@given(body=BODIES)
def test_what_ingest_accepts_the_processor_can_parse(body: bytes) -> None:
    try:
        order, payload = checks.parse_order(body)
    except checks.Rejection as rejection:
        assert rejection.status == 422 and rejection.detail
        json.dumps({"detail": rejection.detail}, ensure_ascii=False).encode()  # the answer itself can be sent
        return
    message = WebhookMessage(webhook_id="wh", topic="orders/updated", received_at=datetime.now(UTC), order=payload)
    webhook = Webhook.from_json(message.model_dump_json().encode())
    assert (webhook.order_id, webhook.updated_at, webhook.total_price) == (
        order.id,
        order.updated_at,
        order.total_price,
    )
    webhook.updated_at.astimezone(UTC)  # the conversion that overflowed for year 0 / 10000 in UTC


def test_the_reported_bodies_are_refused_naming_the_problem() -> None:
    base = b'{"id": "o1", "updated_at": "2026-01-01T00:00:00Z", "note": %s}'
    for raw, needle in (
        (b"[" * 300 + b"]" * 300, "nested deeper than 100 levels"),
        (b"9" * 5000, "4300 digits"),
        (b'"\\ud800"', "lone UTF-16 surrogate"),
        (b"NaN", "NaN"),
    ):
        try:
            checks.parse_order(base % raw)
        except checks.Rejection as rejection:
            assert rejection.status == 422 and needle in rejection.detail, rejection.detail
        else:
            raise AssertionError(f"accepted {raw[:20]!r}")
    for updated_at in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "1969-12-31T23:59:59Z"):
        try:
            checks.parse_order(b'{"id": "o1", "updated_at": "%s"}' % updated_at.encode())
        except checks.Rejection as rejection:
            assert "'updated_at'" in rejection.detail and "1970-01-01" in rejection.detail
        else:
            raise AssertionError(f"accepted updated_at {updated_at}")
