from datetime import UTC

import pytest
from fincart_core.contracts.chaostest import ChaosTest, ChaosTestSpec, parse_duration
from fincart_core.contracts.webhook import ShopifyOrder
from pydantic import ValidationError


def test_shopify_order_accepts_integer_ids_and_keeps_extra_fields():
    order = ShopifyOrder.model_validate(
        {"id": 123, "updated_at": "2026-01-01T10:00:00", "total_price": "19.90", "note": "x"}
    )
    assert order.id == "123"
    assert order.updated_at.tzinfo is UTC
    assert order.model_extra == {"note": "x"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"updated_at": "2026-01-01T00:00:00Z"}, "id"),
        ({"id": "1"}, "updated_at"),
        ({"id": "1", "updated_at": "yesterday"}, "updated_at"),
        ({"id": "1", "updated_at": "2026-01-01T00:00:00Z", "total_price": "-1"}, "total_price"),
        ({"id": True, "updated_at": "2026-01-01T00:00:00Z"}, "id"),
    ],
)
def test_shopify_order_errors_name_the_field(body, field):
    with pytest.raises(ValidationError) as err:
        ShopifyOrder.model_validate(body)
    assert err.value.errors()[0]["loc"][0] == field


def test_durations():
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    for bad in ("", "5", "1d", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_chaostest_spec_defaults_and_camel_case():
    spec = ChaosTestSpec.model_validate({"target": {"ingestUrl": "http://x"}, "load": {"updatesPerOrder": 10}})
    assert spec.load.updates_per_order == 10 and spec.load.concurrency == 100
    assert spec.enabled_invariants() == {f"I{i}" for i in range(1, 8)}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"load": {"duplicateRatio": 1.5}}, "duplicateRatio"),
        ({"faults": [{"name": "f", "type": "meteor"}]}, "type"),
        ({"bogus": 1}, "bogus"),
        ({"faults": [{"name": "a", "type": "podKill"}, {"name": "a", "type": "podKill"}]}, "duplicate"),
    ],
)
def test_chaostest_spec_rejections_name_the_field(spec, needle):
    with pytest.raises(ValidationError) as err:
        ChaosTestSpec.model_validate({"target": {"ingestUrl": "http://x"}, **spec})
    assert needle in str(err.value)


def test_whole_object_requires_target():
    with pytest.raises(ValidationError) as err:
        ChaosTest.model_validate(
            {"apiVersion": "chaos.fincart.io/v1alpha1", "kind": "ChaosTest", "metadata": {"name": "x"}, "spec": {}}
        )
    assert "target" in str(err.value)
