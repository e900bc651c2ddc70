"""Batch decisions == applying the webhooks one by one (hypothesis against a plain reference model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fincart_processor.decisions import Stored, Webhook, plan_batch
from hypothesis import given, settings
from hypothesis import strategies as st

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def webhook(webhook_id: str, order_id: str, second: int) -> Webhook:
    return Webhook(webhook_id, order_id, BASE + timedelta(seconds=second), "PENDING", Decimal("10"),
                   Decimal("9.99"), BASE)


def reference(webhooks, stored, audited):  # type: ignore[no-untyped-def]
    """The seed's rule applied one webhook at a time, the obvious way."""
    state = {k: (v.version, v.last_at, v.last_webhook_id) for k, v in stored.items()}
    seen = dict(audited)
    audit, events, republished = [], [], []
    for w in webhooks:
        if w.webhook_id in seen:
            # a redelivery re-publishes its event; twice is the same event (same Nats-Msg-Id)
            entry = (w.webhook_id, audited.get(w.webhook_id))
            if w.webhook_id in audited and entry[1] is not None and entry not in republished:
                republished.append(entry)
            continue
        version, last_at, last_id = state.get(w.order_id, (0, None, None))
        if last_at is None or (w.updated_at, w.webhook_id) > (last_at, last_id):
            state[w.order_id] = (version + 1, w.updated_at, w.webhook_id)
            audit.append((w.webhook_id, "processed", version + 1))
            events.append((w.order_id, version + 1, w.webhook_id))
            seen[w.webhook_id] = version + 1
        else:
            audit.append((w.webhook_id, "discarded", None))
            seen[w.webhook_id] = None
    return audit, events, republished, state


webhooks_strategy = st.lists(
    st.builds(webhook, st.sampled_from([f"w{i}" for i in range(30)]), st.sampled_from(["a", "b", "c", "d"]),
              st.integers(0, 5)),  # few seconds: many equal timestamps, the id must break ties
    max_size=60,
).map(lambda ws: [w for i, w in enumerate(ws) if w.webhook_id not in {x.webhook_id for x in ws[:i]}
                  or w == next(x for x in ws if x.webhook_id == w.webhook_id)])  # a repeated id is the same webhook


@settings(max_examples=400, deadline=None)
@given(
    webhooks=webhooks_strategy,
    stored=st.dictionaries(st.sampled_from(["a", "b", "c"]),
                           st.builds(lambda v, s, i: Stored(v, BASE + timedelta(seconds=s), f"w{i}"),
                                     st.integers(1, 5), st.integers(0, 5), st.integers(0, 29))),
    audited_ids=st.sets(st.sampled_from([f"w{i}" for i in range(30)]), max_size=5),
)
def test_batch_equals_one_by_one(webhooks, stored, audited_ids):
    audited = {w: (3 if int(w[1:]) % 2 else None) for w in audited_ids}
    plan = plan_batch(webhooks, stored, audited)
    audit, events, republished, state = reference(webhooks, stored, audited)
    assert [(w.webhook_id, s, v) for w, s, v in plan.audit] == audit
    assert [(a.webhook.order_id, a.version, a.webhook.webhook_id) for a in plan.applied] == events
    assert [(a.webhook.webhook_id, a.version) for a in plan.redelivered] == republished
    final = {k: (a.version, a.webhook.updated_at, a.webhook.webhook_id) for k, a in plan.final_per_order().items()}
    assert {k: v for k, v in state.items() if k in final} == final


def test_the_id_breaks_timestamp_ties_and_versions_count_processed():
    plan = plan_batch([webhook("b", "o", 1), webhook("a", "o", 1), webhook("c", "o", 1), webhook("z", "o", 0)],
                      {}, {})
    assert [(w.webhook_id, s) for w, s, _ in plan.audit] == [
        ("b", "processed"), ("a", "discarded"), ("c", "processed"), ("z", "discarded")]
    assert plan.final_per_order()["o"].version == 2
