from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fincart_core.domain import order_status, shipping_fee, supersedes
from fincart_core.partition import Topology, partition_for
from fincart_core.signing import sign, verify


@pytest.mark.parametrize(
    ("financial", "fulfillment", "expected"),
    [
        ("paid", "fulfilled", "SHIPPED"),
        ("paid", "partial", "CONFIRMED"),
        ("paid", "restocked", "CANCELLED"),
        ("pending", None, "PENDING"),
        ("authorized", None, "PENDING"),
        ("paid", None, "CONFIRMED"),
        ("partially_paid", None, "CONFIRMED"),
        ("partially_refunded", None, "CONFIRMED"),
        ("refunded", None, "CANCELLED"),
        ("voided", None, "CANCELLED"),
        ("mystery", None, "PENDING"),
        (None, None, "PENDING"),
        ("refunded", "unfulfilled", "CANCELLED"),
    ],
)
def test_order_status_follows_the_seed_mapping(financial, fulfillment, expected):
    assert order_status(financial, fulfillment) == expected


@pytest.mark.parametrize(
    ("total", "fee"),
    [
        ("0", "9.99"),
        ("49.99", "9.99"),
        ("50", "7.99"),
        ("99.99", "7.99"),
        ("100", "5.99"),
        ("199.99", "5.99"),
        ("200", "0.00"),
        ("1000", "0.00"),
        (None, "9.99"),
    ],
)
def test_shipping_fee_tiers(total, fee):
    assert shipping_fee(Decimal(total) if total else None) == Decimal(fee)


def test_supersedes_breaks_ties_by_webhook_id():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert supersedes(t + timedelta(seconds=1), "a", t, "z")
    assert not supersedes(t, "a", t + timedelta(seconds=1), "a")
    assert supersedes(t, "b", t, "a")
    assert not supersedes(t, "a", t, "a")


def test_partition_is_crc32_and_stable():
    assert partition_for("order_chaos_test_12345", 16) == partition_for("order_chaos_test_12345", 16)
    assert {partition_for(f"o{i}", 16) for i in range(500)} == set(range(16))
    with pytest.raises(ValueError):
        partition_for("x", 0)


def test_topology_prefix_isolates_names():
    plain, prefixed = Topology(4), Topology(4, prefix="t1")
    assert plain.orders_stream == "ORDERS" and plain.webhook_subject(3) == "orders.webhooks.3"
    assert prefixed.orders_stream == "T1_ORDERS" and prefixed.webhook_subject(3) == "t1.orders.webhooks.3"
    assert prefixed.event_subject_for("x").startswith("t1.orders.events.")


def test_signature_round_trip_and_rejections():
    body = b'{"id": 1}'
    good = sign(body, "s3cret")
    assert verify(body, "s3cret", good)
    assert not verify(body, "other", good)
    assert not verify(body + b" ", "s3cret", good)
    assert not verify(body, "s3cret", good[:-4])  # wrong length
    assert not verify(body, "s3cret", "not base64!!")
    assert not verify(body, "s3cret", None)
