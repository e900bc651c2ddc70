"""The workload is a pure function of (spec, runner index, run id): the verifier rebuilds it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest
from fincart_chaos.workload import (
    POISON,
    SEED_ORDER,
    STATUS_PAIRS,
    TOTALS,
    all_webhooks,
    full_plan,
    order_ids,
    plan,
)
from fincart_core.contracts.chaostest import Load
from fincart_core.contracts.webhook import ShopifyOrder
from pydantic import ValidationError


def test_the_seed_scenario_has_the_guide_ids():
    requests = plan(Load(orders=1, updates_per_order=100, tie_ratio=0), 0)
    assert {r.webhook.order_id for r in requests} == {SEED_ORDER}
    assert {r.webhook.webhook_id for r in requests} == {f"chaos-webhook-{SEED_ORDER}-{i}" for i in range(100)}
    assert len({r.webhook.updated_at for r in requests}) == 100  # each update its own updated_at
    assert len({(r.webhook.status, r.webhook.shipping_fee) for r in requests}) > 4  # and its own status/fee


def test_every_status_pair_and_every_tier_boundary_is_sent():
    webhooks = all_webhooks(Load(orders=1, updates_per_order=100))
    pairs = {(w.payload["financial_status"], w.payload["fulfillment_status"]) for w in webhooks}
    assert pairs == set(STATUS_PAIRS) and len(pairs) == 32
    totals = {w.payload["total_price"] for w in webhooks}
    assert totals == set(TOTALS) >= {"49.99", "50.00", "99.99", "100.00", "199.99", "200.00"}
    # and the winners of a many-order load are not all of one kind
    many = all_webhooks(Load(orders=200, updates_per_order=3))
    assert {(w.payload["financial_status"], w.payload["fulfillment_status"]) for w in many} == set(STATUS_PAIRS)


def test_ties_share_updated_at_and_their_ids_come_in_every_order():
    load = Load(orders=50, updates_per_order=10, tie_ratio=0.3)
    groups: dict[tuple[str, object], list] = defaultdict(list)
    for w in all_webhooks(load):
        groups[(w.order_id, w.updated_at)].append(w)
    ties = [g for g in groups.values() if len(g) > 1]
    assert len(ties) >= 20
    assert all(w.webhook_id.startswith("chaos-tie-") for g in ties for w in g)
    # the id order is unrelated to the index (send) order: the winner is sometimes the first, sometimes not
    first_wins = [max(g, key=lambda w: w.sort_key) is g[0] for g in ties]
    assert any(first_wins) and not all(first_wins)
    untied = [g[0] for g in groups.values() if len(g) == 1]
    assert all(w.webhook_id == f"chaos-webhook-{w.order_id}-{w.index}" for w in untied)
    # no ties without tie_ratio
    untied_load = Load(orders=3, updates_per_order=20, tie_ratio=0)
    assert len({(w.order_id, w.updated_at) for w in all_webhooks(untied_load)}) == 60


def test_poison_is_signed_valid_json_and_an_invalid_order():
    load = Load(orders=10, updates_per_order=10, poison_ratio=0.2, poison_kinds=["schema", "calendarEdge"])
    requests = plan(load, 0)
    poison = [r for r in requests if r.kind == "poison"]
    assert len(poison) == 20 and all(r.signed and not r.valid for r in poison)
    names = {r.webhook.webhook_id.split("-", 2)[2].rsplit("-", 3)[0] for r in poison}
    assert names == set(POISON)  # every kind at least once
    orders = set(order_ids(load))
    for r in poison:
        body = json.loads(r.webhook.body())
        assert isinstance(body, dict) and r.webhook.order_id in orders
        # the order contract refuses every kind: a calendar edge's updated_at lies outside the accepted range
        with pytest.raises(ValidationError):
            ShopifyOrder.model_validate(body)
    schema_only = [r for r in plan(load.model_copy(update={"poison_kinds": ["schema"]}), 0) if r.kind == "poison"]
    assert len(schema_only) == 20 and not [r for r in schema_only if "-year-" in r.webhook.webhook_id]


def test_same_spec_same_requests_other_seed_other_requests():
    load = Load(orders=20, updates_per_order=5, parallelism=2, duplicate_ratio=0.1, invalid_signature_ratio=0.1)
    again = [(r.webhook.webhook_id, r.kind, r.webhook.body()) for r in plan(load, 1)]
    assert again == [(r.webhook.webhook_id, r.kind, r.webhook.body()) for r in plan(load, 1)]
    other = plan(load.model_copy(update={"seed": 43}), 1)
    assert again != [(r.webhook.webhook_id, r.kind, r.webhook.body()) for r in other]


def test_runners_split_the_webhooks_without_overlap():
    load = Load(orders=7, updates_per_order=9, parallelism=3)
    shares = [{r.webhook.webhook_id for r in plan(load, i)} for i in range(3)]
    assert sum(len(s) for s in shares) == 63
    assert set.union(*shares) == {r.webhook.webhook_id for r in full_plan(load)}


def test_ratios_shape_the_send_order():
    load = Load(
        orders=10, updates_per_order=20, duplicate_ratio=0.1, out_of_order_ratio=0.5, invalid_signature_ratio=0.05
    )
    requests = plan(load, 0)
    kinds = Counter(r.kind for r in requests)
    assert kinds == {"valid": 200, "duplicate": 20, "invalid_signature": 10}
    valid = [r.webhook for r in requests if r.kind == "valid"]
    ids = [r.webhook.webhook_id for r in requests]
    for dup in (r for r in requests if r.kind == "duplicate"):
        assert ids.index(dup.webhook.webhook_id) < len(ids) - 1 - ids[::-1].index(dup.webhook.webhook_id)
    displaced = sum(1 for a, b in zip(valid, sorted(valid, key=lambda w: (w.index, w.order_id)), strict=True) if a != b)
    assert 0 < displaced <= 100  # about half the positions exchanged their webhooks
    forged = [r.webhook for r in requests if r.kind == "invalid_signature"]
    newest = max(w.updated_at for w in valid)
    assert all(w.updated_at > newest and w.webhook_id.startswith("chaos-invalid-") for w in forged)


def test_in_order_without_out_of_order_ratio():
    requests = plan(Load(orders=3, updates_per_order=4, out_of_order_ratio=0.0), 0)
    assert [r.webhook.index for r in requests] == sorted(r.webhook.index for r in requests)


def test_a_run_id_makes_order_ids_unique_per_run():
    assert order_ids(Load(orders=1), "ab12") == [f"{SEED_ORDER}-ab12"]
    assert order_ids(Load(orders=2, seed=5)) == ["order_chaos_5_0", "order_chaos_5_1"]


def test_runner_index_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        plan(Load(parallelism=2), 2)
