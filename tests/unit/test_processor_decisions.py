"""Batch decisions == applying the webhooks one by one (hypothesis against the plain reference model)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

import pytest
from fincart_core.contracts.webhook import WebhookMessage
from fincart_processor.decisions import Stored, Webhook, plan_batch
from hypothesis import given, settings
from pydantic import ValidationError

from tests.support.processor_model import BASE, Model, Row, deliveries, webhook


def batched(batches: Sequence[Sequence[Webhook]]) -> Model:
    """Run plan_batch over the batches, carrying the stored rows and audit between them as the DB does."""
    result = Model()
    stored: dict[str, Stored] = {}
    for batch in batches:
        plan = plan_batch(batch, stored, {k: v for k, (_, v) in result.audit.items()})
        for w, status, version in plan.audit:
            result.audit[w.webhook_id] = (status, version)
        result.events += [(a.webhook.order_id, a.version, a.webhook.webhook_id) for a in plan.applied]
        result.republished += [(a.webhook.order_id, a.version, a.webhook.webhook_id) for a in plan.redelivered]
        for order_id, a in plan.final_per_order().items():
            w = a.webhook
            stored[order_id] = Stored(a.version, w.updated_at, w.webhook_id)
            result.rows[order_id] = Row(a.version, w.updated_at, w.webhook_id, w.status, w.total_price, w.shipping_fee)
    return result


@settings(max_examples=300, deadline=None)
@given(batches=deliveries())
def test_batches_equal_one_by_one(batches: list[list[Webhook]]) -> None:
    reference = Model()
    for batch in batches:
        for w in batch:
            reference.apply(w)
    actual = batched(batches)
    assert actual.rows == reference.rows
    assert actual.audit == reference.audit
    assert actual.events == reference.events  # one per applied version, in stream order
    # what goes out as events (same Nats-Msg-Id = same event): a duplicate inside one batch is published once
    assert set(actual.events + actual.republished) == set(reference.events + reference.republished)
    assert set(actual.republished) <= set(reference.republished)


def test_the_id_breaks_timestamp_ties_and_versions_count_processed() -> None:
    plan = plan_batch([webhook("b", "o", 1), webhook("a", "o", 1), webhook("c", "o", 1), webhook("z", "o", 0)], {}, {})
    assert [(w.webhook_id, s) for w, s, _ in plan.audit] == [
        ("b", "processed"),
        ("a", "discarded"),
        ("c", "processed"),
        ("z", "discarded"),
    ]
    assert plan.final_per_order()["o"].version == 2


def test_a_webhook_twice_in_one_batch_counts_once() -> None:
    plan = plan_batch([webhook("a", "o", 1), webhook("a", "o", 1)], {}, {})
    assert [(w.webhook_id, s, v) for w, s, v in plan.audit] == [("a", "processed", 1)]
    assert [a.version for a in plan.applied] == [1]


def test_an_audited_webhook_writes_nothing_and_republishes_its_version() -> None:
    stored = {"o": Stored(4, BASE + timedelta(seconds=9), "z")}
    plan = plan_batch([webhook("a", "o", 1), webhook("d", "o", 0)], stored, {"a": 3, "d": None})
    assert plan.audit == [] and plan.applied == []
    assert [(a.webhook.webhook_id, a.version) for a in plan.redelivered] == [("a", 3)]


def test_a_stored_row_decides_the_first_webhook_of_the_batch() -> None:
    stored = {"o": Stored(7, BASE + timedelta(seconds=2), "m")}
    plan = plan_batch([webhook("l", "o", 2), webhook("n", "o", 2)], stored, {})
    assert [(w.webhook_id, s, v) for w, s, v in plan.audit] == [("l", "discarded", None), ("n", "processed", 8)]


def test_one_pass_parsing_agrees_with_the_contract() -> None:
    message = WebhookMessage(
        webhook_id="w",
        topic="orders/updated",
        received_at=BASE,
        order={
            "id": 12345,
            "updated_at": "2026-01-01T00:00:05",
            "financial_status": "paid",
            "fulfillment_status": "partial",
            "total_price": "120.00",
            "note": "kept",
        },
    )
    webhook = Webhook.from_json(message.model_dump_json().encode())
    assert webhook == Webhook.from_message(message)
    assert (webhook.order_id, webhook.status, webhook.shipping_fee) == ("12345", "CONFIRMED", Decimal("5.99"))
    assert webhook.updated_at == BASE + timedelta(seconds=5)  # naive means UTC


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"webhook_id": "w", "topic": "t", "received_at": "2026-01-01T00:00:00Z", "order": []}',
        b'{"webhook_id": "w", "topic": "t", "received_at": "2026-01-01T00:00:00Z", "order": {"id": "o"}}',
        b'{"webhook_id": "w", "topic": "t", "received_at": "2026-01-01T00:00:00Z",'
        b' "order": {"id": "o", "updated_at": "2026-01-01T00:00:00Z", "total_price": "-1"}}',
        b'{"webhook_id": "w", "topic": "t", "received_at": "2026-01-01T00:00:00Z",'
        b' "order": {"id": "o\\u0000", "updated_at": "2026-01-01T00:00:00Z"}}',
    ],
)
def test_poison_bodies_do_not_parse(body: bytes) -> None:
    with pytest.raises((ValidationError, ValueError)):
        Webhook.from_json(body)


def test_a_received_at_without_a_utc_equivalent_is_poison() -> None:
    """(The order contract already refuses such an updated_at.)"""
    body = (
        b'{"webhook_id": "w", "topic": "t", "received_at": "0001-01-01T00:00:00+01:00",'
        b' "order": {"id": "o", "updated_at": "2026-01-01T00:00:00Z"}}'
    )
    with pytest.raises(ValueError, match=r"received_at .* outside the range of UTC timestamps"):
        Webhook.from_json(body)
