"""The verifier's checks on histories built by the one-at-a-time reference model, then broken on purpose.

A correct history must pass; every kind of damage must fail naming its invariant (a checker that cannot
fail is worth nothing). The same checks run against real broken processors in
tests/integration/test_chaos_broken_processors.py.
"""

from __future__ import annotations

import dataclasses

import pytest
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.observer import Seen
from fincart_chaos.verify import ALL_INVARIANTS, AuditRow, History, OrderRow, Result, check_history
from fincart_chaos.workload import Request, full_plan
from fincart_core.contracts.chaostest import Load

from tests.support.processor_model import Model, Row

LOAD = Load(orders=4, updates_per_order=12, duplicate_ratio=0.1, invalid_signature_ratio=0.1, seed=3)


def entry(request: Request, status: int) -> LedgerEntry:
    w = request.webhook
    return LedgerEntry(webhook_id=w.webhook_id, order_id=w.order_id, kind=request.kind, status=status,
                       first_status=status, attempts=1, sent_at=0.0, done_at=0.0, latency_ms=1.0)


def run_model(requests: list[Request], model: Model | None = None) -> tuple[History, list[Seen], list[LedgerEntry]]:
    """What a correct pipeline stores and a client sees, when the webhooks arrive in send order."""
    model = model or Model()
    by_id = {r.webhook.webhook_id: r.webhook for r in requests}
    for request in requests:
        if request.valid:
            model.apply(request.webhook)
    history = History(
        orders=[OrderRow(o, r.status, r.shipping_fee, r.version, r.last_webhook_id) for o, r in model.rows.items()],
        audit=[AuditRow(w, by_id[w].order_id, status) for w, (status, _) in model.audit.items()],
    )
    seen = [Seen(kind="event", seq=n, order_id=o, version=v, status=by_id[w].status,
                 shipping_fee=str(by_id[w].shipping_fee), last_webhook_id=w, received_at=0.0)
            for n, (o, v, w) in enumerate(model.events, 1)]
    ledger = [entry(r, 200 if r.valid else 401) for r in requests]
    return history, seen, ledger


def verdict(requests, ledger, history, seen, max_lost: int = 0) -> Result:  # type: ignore[no-untyped-def]
    return check_history(requests, ledger, history, seen, invariants=set(ALL_INVARIANTS), max_lost=max_lost)


def failed(result: Result) -> set[str]:
    assert result.verdict == "Fail"
    for anomaly in result.anomalies:
        assert 0 < len(anomaly.samples) <= 10 and anomaly.count >= len(anomaly.samples)
    return {a.invariant for a in result.anomalies}


@pytest.fixture
def sent() -> list[Request]:
    return full_plan(LOAD)


def test_a_correct_history_passes(sent):
    history, seen, ledger = run_model(sent)
    result = verdict(sent, ledger, history, seen)
    assert (result.verdict, result.anomalies) == ("Pass", [])
    assert result.counts.acked == sum(r.valid for r in sent) and result.counts.rejected == sum(
        not r.valid for r in sent)
    assert result.counts.stored == len({r.webhook.webhook_id for r in sent if r.valid})


def test_without_ledger_or_observer_the_rest_is_checked_but_the_verdict_is_inconclusive(sent):
    history, _, _ = run_model(sent)
    result = verdict(sent, None, history, None)
    assert result.verdict == "Inconclusive" and not result.anomalies
    assert result.checked == ["I1", "I2", "I3", "I4", "I5"]
    assert {a.invariant for a in result.inconclusive} == {"I6", "I7"}
    # chosen away by the spec, they are not owed
    assert check_history(sent, None, history, None, invariants={"I1", "I5"}).verdict == "Pass"


class LastWins(Model):
    """A processor that ignores the timestamp: every new webhook overwrites the row."""

    def apply(self, w):  # type: ignore[no-untyped-def]
        if w.webhook_id in self.audit:
            return
        row = self.rows.get(w.order_id)
        version = (row.version if row else 0) + 1
        self.rows[w.order_id] = Row(version, w.updated_at, w.webhook_id, w.status, w.total_price, w.shipping_fee)
        self.audit[w.webhook_id] = ("processed", version)
        self.events.append((w.order_id, version, w.webhook_id))


def test_ignoring_the_timestamp_fails_i2(sent):
    history, seen, ledger = run_model(sent, LastWins())
    result = verdict(sent, ledger, history, seen)
    assert "I2" in failed(result) and result.counts.stale_overwrites > 0


def test_a_lost_webhook_fails_i5_unless_tolerated(sent):
    history, seen, ledger = run_model(sent)
    victim = next(a for a in history.audit if a.status == "discarded")  # its loss changes no version
    damaged = dataclasses.replace(history, audit=[a for a in history.audit if a is not victim])
    result = verdict(sent, ledger, damaged, seen)
    assert "I5" in failed(result) and result.counts.lost == 1
    assert victim.webhook_id in next(a.samples for a in result.anomalies if a.invariant == "I5")
    tolerated = verdict(sent, ledger, damaged, seen, max_lost=1)
    assert tolerated.verdict == "Pass" and tolerated.notes


def test_a_webhook_applied_twice_fails_i4_and_i5(sent):
    history, seen, ledger = run_model(sent)
    row = history.orders[0]
    bumped = dataclasses.replace(row, version=row.version + 1)
    again = seen[-1].model_copy(update={"order_id": row.order_id, "version": row.version + 1,
                                         "last_webhook_id": row.last_webhook_id, "status": row.status,
                                         "shipping_fee": str(row.shipping_fee), "seq": len(seen) + 1})
    damaged = dataclasses.replace(history, orders=[bumped, *history.orders[1:]])
    result = verdict(sent, ledger, damaged, [*seen, again])
    assert {"I4", "I5"} <= failed(result) and result.counts.duplicated == 1


def test_missing_change_events_fail_i6(sent):
    history, seen, ledger = run_model(sent)
    result = verdict(sent, ledger, history, seen[::2])
    assert failed(result) == {"I6"}
    assert verdict(sent, ledger, history, [*seen, *seen]).verdict == "Pass"  # duplicates are not gaps


def test_a_forged_webhook_stored_fails_i5_and_answers_are_i7(sent):
    history, seen, ledger = run_model(sent)
    forged = next(r for r in sent if not r.valid)
    damaged = dataclasses.replace(history, audit=[*history.audit, AuditRow(forged.webhook.webhook_id,
                                                                            forged.webhook.order_id, "processed")])
    assert "I5" in failed(verdict(sent, ledger, damaged, seen))
    accepted = [entry(r, 200) if r is forged else e for r, e in zip(sent, ledger, strict=True)]
    assert failed(verdict(sent, accepted, history, seen)) == {"I7"}
    erroring = [e.model_copy(update={"first_status": 500}) if n == 0 else e for n, e in enumerate(ledger)]
    assert failed(verdict(sent, erroring, history, seen)) == {"I7"}


def test_nulls_failed_rows_and_extra_rows_fail_i1_i3(sent):
    history, seen, ledger = run_model(sent)
    nulls = dataclasses.replace(history, orders=[dataclasses.replace(history.orders[0], null_columns=("status",)),
                                                 *history.orders[1:]])
    assert "I1" in failed(verdict(sent, ledger, nulls, seen))
    gone = dataclasses.replace(history, orders=history.orders[1:])
    assert "I1" in failed(verdict(sent, ledger, gone, seen))
    failing = dataclasses.replace(history, audit=[dataclasses.replace(history.audit[0], status="failed"),
                                                  *history.audit[1:]])
    assert "I3" in failed(verdict(sent, ledger, failing, seen))


def test_only_the_chosen_invariants_count(sent):
    history, seen, ledger = run_model(sent)
    result = check_history(sent, ledger, history, seen[::2], invariants={"I1", "I2"})
    assert result.verdict == "Pass" and result.checked == ["I1", "I2"]


def test_nothing_acked_is_inconclusive(sent):
    history = History(orders=[], audit=[])
    ledger = [entry(r, 503 if r.valid else 401) for r in sent]
    result = check_history(sent, ledger, history, [], invariants={"I1", "I2", "I3", "I4", "I5", "I6"})
    assert result.verdict == "Inconclusive"
