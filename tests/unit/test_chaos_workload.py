"""The workload is a pure function of (spec, runner index, run id): the verifier rebuilds it."""

from __future__ import annotations

from collections import Counter

import pytest
from fincart_chaos.workload import SEED_ORDER, full_plan, order_ids, plan
from fincart_core.contracts.chaostest import Load


def test_the_seed_scenario_has_the_guide_ids():
    requests = plan(Load(orders=1, updates_per_order=100), 0)
    assert {r.webhook.order_id for r in requests} == {SEED_ORDER}
    assert {r.webhook.webhook_id for r in requests} == {f"chaos-webhook-{SEED_ORDER}-{i}" for i in range(100)}
    assert len({r.webhook.updated_at for r in requests}) == 100  # each update its own updated_at
    assert len({(r.webhook.status, r.webhook.shipping_fee) for r in requests}) > 4  # and its own status/fee


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
    load = Load(orders=10, updates_per_order=20, duplicate_ratio=0.1, out_of_order_ratio=0.5,
                invalid_signature_ratio=0.05)
    requests = plan(load, 0)
    kinds = Counter(r.kind for r in requests)
    assert kinds == {"valid": 200, "duplicate": 20, "invalid_signature": 10}
    valid = [r.webhook for r in requests if r.kind == "valid"]
    ids = [r.webhook.webhook_id for r in requests]
    for dup in (r for r in requests if r.kind == "duplicate"):
        assert ids.index(dup.webhook.webhook_id) < len(ids) - 1 - ids[::-1].index(dup.webhook.webhook_id)
    displaced = sum(1 for a, b in zip(valid, sorted(valid, key=lambda w: (w.index, w.order_id)), strict=True)
                    if a != b)
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
