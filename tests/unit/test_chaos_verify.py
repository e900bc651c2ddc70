"""The verifier's checks on histories built by the one-at-a-time reference model, then broken on purpose.

A correct history must pass; every kind of damage must fail naming its invariant (a checker that cannot
fail is worth nothing). The same checks run against real broken processors in
tests/integration/test_chaos_broken_processors.py.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from fincart_chaos import oracle, workload
from fincart_chaos import verify as verify_module
from fincart_chaos.evidence import counterexamples
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.observer import Seen
from fincart_chaos.outcomes import classify
from fincart_chaos.verify import (
    ALL_INVARIANTS,
    REQUIRED_COLUMNS,
    AuditRow,
    Context,
    History,
    OrderRow,
    Result,
    _applied_twice,
    _delivery_gaps,
    read_history,
    settle,
    verify,
)
from fincart_chaos.workload import Request, Webhook, full_plan
from fincart_core.contracts.chaostest import Load
from fincart_core.contracts.report import FaultRecord

from tests.support.chaos_histories import entry, run_model, timed
from tests.support.processor_model import Model, Row

LOAD = Load(orders=4, updates_per_order=12, duplicate_ratio=0.1, invalid_signature_ratio=0.1, seed=3)


def check_history(
    requests: list[Request],
    ledger: list[LedgerEntry] | None,
    history: History,
    observed: list[Seen] | None,
    *,
    invariants: set[str],
    max_lost: int = 0,
) -> Result:
    """``verify`` over a context built from its parts (no faults, caught up)."""
    return verify(Context(requests, ledger, history, observed, max_lost=max_lost), invariants)


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
        not r.valid for r in sent
    )
    assert result.counts.stored == len({r.webhook.webhook_id for r in sent if r.valid})
    assert (result.counts.stale_overwrites, result.counts.duplicated, result.counts.unexpected) == (0, 0, 0)
    assert result.notes == []


def test_without_ledger_or_observer_the_rest_is_checked_but_the_verdict_is_inconclusive(sent):
    history, _, _ = run_model(sent)
    result = verdict(sent, None, history, None)
    assert result.verdict == "Inconclusive" and not result.anomalies
    assert result.checked == ["I1", "I2", "I3", "I4", "I5"]
    assert {a.invariant for a in result.inconclusive} == {"I6", "I7"}
    assert [a.count for a in result.inconclusive] == [0, 0]  # not about any webhook
    assert (result.counts.unknown, result.counts.recovered, result.counts.rejected) == (0, 0, 0)  # no answers
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
    assert "I5" in failed(result) and result.counts.lost == 1 and result.notes == []
    assert victim.webhook_id in next(a.samples for a in result.anomalies if a.invariant == "I5")
    tolerated = verdict(sent, ledger, damaged, seen, max_lost=1)
    assert tolerated.verdict == "Pass" and tolerated.notes == ["1 lost webhooks within maxLost=1"]
    roomy = verdict(sent, ledger, damaged, seen, max_lost=2)
    assert roomy.verdict == "Pass" and roomy.notes == ["1 lost webhooks within maxLost=2"]


def test_a_webhook_applied_twice_fails_i4_and_i5(sent):
    history, seen, ledger = run_model(sent)
    row = history.orders[0]
    bumped = dataclasses.replace(row, version=row.version + 1)
    again = seen[-1].model_copy(
        update={
            "order_id": row.order_id,
            "version": row.version + 1,
            "last_webhook_id": row.last_webhook_id,
            "status": row.status,
            "shipping_fee": str(row.shipping_fee),
            "seq": len(seen) + 1,
        }
    )
    damaged = dataclasses.replace(history, orders=[bumped, *history.orders[1:]])
    result = verdict(sent, ledger, damaged, [*seen, again])
    assert {"I4", "I5"} <= failed(result) and result.counts.duplicated == 1


def test_missing_change_events_fail_i6(sent):
    history, seen, ledger = run_model(sent)
    result = verdict(sent, ledger, history, seen[::2])
    assert failed(result) == {"I6"}
    assert [len(a.samples) for a in result.anomalies] == [10]  # of more
    assert verdict(sent, ledger, history, [*seen, *seen]).verdict == "Pass"  # duplicates are not gaps


def test_a_forged_webhook_stored_fails_i5_and_answers_are_i7(sent):
    history, seen, ledger = run_model(sent)
    forged = next(r for r in sent if not r.valid)
    damaged = dataclasses.replace(
        history, audit=[*history.audit, AuditRow(forged.webhook.webhook_id, forged.webhook.order_id, "processed")]
    )
    assert "I5" in failed(verdict(sent, ledger, damaged, seen))
    accepted = [entry(r, 200) if r is forged else e for r, e in zip(sent, ledger, strict=True)]
    assert failed(verdict(sent, accepted, history, seen)) == {"I7"}
    erroring = [e.model_copy(update={"first_status": 500}) if n == 0 else e for n, e in enumerate(ledger)]
    assert failed(verdict(sent, erroring, history, seen)) == {"I7"}


def test_nulls_failed_rows_and_extra_rows_fail_i1_i3(sent):
    history, seen, ledger = run_model(sent)
    nulls = dataclasses.replace(
        history, orders=[dataclasses.replace(history.orders[0], null_columns=("status",)), *history.orders[1:]]
    )
    assert "I1" in failed(verdict(sent, ledger, nulls, seen))
    gone = dataclasses.replace(history, orders=history.orders[1:])
    assert "I1" in failed(verdict(sent, ledger, gone, seen))
    failing = dataclasses.replace(
        history, audit=[dataclasses.replace(history.audit[0], status="failed"), *history.audit[1:]]
    )
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


# ---------------------------------------------------------------- outcome classes


def test_each_outcome_class_and_unknown_is_never_lost(sent):
    history, seen, ledger = run_model(sent)
    ledger = timed(ledger)
    discarded = [a.webhook_id for a in history.audit if a.status == "discarded"]
    lost_id, unknown_id, recovered_id = discarded[:3]  # their loss changes no row, version or event
    forged = next(e for e in ledger if not e.valid)
    answers = {unknown_id: 0, recovered_id: 504}
    ledger = [
        e.model_copy(update={"status": answers[e.webhook_id], "first_status": answers[e.webhook_id]})
        if e.webhook_id in answers
        else e
        for e in ledger
    ]
    audit = [a for a in history.audit if a.webhook_id not in (lost_id, unknown_id)]
    audit.append(AuditRow(forged.webhook_id, forged.order_id, "discarded"))
    result = verdict(sent, ledger, dataclasses.replace(history, audit=audit), seen)
    outcomes = result.outcomes
    assert (outcomes["lost"], outcomes["unknown"], outcomes["recovered"], outcomes["unexpected"]) == (1, 1, 1, 1)
    assert outcomes["rejected"] == sum(not r.valid for r in sent) - 1
    assert outcomes["stored"] == len({r.webhook.webhook_id for r in sent if r.valid}) - 3
    assert (result.counts.lost, result.counts.unknown, result.counts.recovered) == (1, 1, 1)
    lost = next(a for a in result.anomalies if a.message == "acked webhooks never stored (tolerated: 0)")
    assert lost.samples == [lost_id]  # the unknown one is not lost
    assert failed(result) == {"I5", "I7"}  # unknown/recovered: never answered 2xx (I7); lost, unexpected: I5
    assert sum(result.lost_positions.values()) == 1


def test_lost_webhooks_are_placed_among_the_acknowledged_ones_of_their_order():
    def e(webhook_id: str, done_at: float, status: int = 200) -> LedgerEntry:
        return LedgerEntry(
            webhook_id=webhook_id,
            order_id="o",
            kind="valid",
            status=status,
            first_status=status,
            attempts=1,
            sent_at=done_at - 1,
            done_at=done_at,
            latency_ms=1.0,
        )

    ledger = [e("w0", 1), e("w1", 2), e("w2", 3), e("w3", 4), e("w4", 5), e("w5", 6, 0)]
    outcomes = {o.webhook_id: o for o in classify(ledger, applied={"w1", "w3"})}
    assert [(outcomes[w].outcome, outcomes[w].position) for w in ("w0", "w2", "w4", "w5")] == [
        ("lost", "before"),
        ("lost", "between"),
        ("lost", "after"),
        ("unknown", None),
    ]
    alone = classify([e("x", 1)], applied=set())
    assert (alone[0].outcome, alone[0].position) == ("lost", "alone")


# ---------------------------------------------------------------- coverage and catch-up


def fault(name: str, start: float, end: float, result: str = "healed") -> FaultRecord:
    return FaultRecord(name=name, type="podKill", started_at=start, healed_at=end, result=result)  # type: ignore[arg-type]


def judge(sent, ledger, history, seen, **context) -> Result:  # type: ignore[no-untyped-def]
    return verify(Context(sent, ledger, history, seen, **context), set(ALL_INVARIANTS))


def test_a_fault_that_hit_nothing_in_flight_makes_the_verdict_inconclusive(sent):
    history, seen, ledger = run_model(sent)
    ledger = timed(ledger)  # requests from t=1000 to about 1001
    hit = fault("kill-during", 1000.2, 1000.4)
    assert judge(sent, ledger, history, seen, faults=[hit]).verdict == "Pass"
    after = fault("kill-after", 2000.0, 2001.0)
    broken = fault("kill-broken", 1000.2, 1000.4, result="failed")
    result = judge(sent, ledger, history, seen, faults=[hit, after, broken])
    assert result.verdict == "Inconclusive" and not result.anomalies
    assert [(a.invariant, a.samples) for a in result.inconclusive] == [
        ("coverage", ["kill-after"]),
        ("coverage", ["kill-broken"]),
    ]
    assert "kill-after" in (result.reason or "") and result.checked == list(ALL_INVARIANTS)
    # without ledgers nobody knows what a fault hit
    assert judge(sent, None, history, seen, faults=[hit]).verdict == "Inconclusive"


def test_a_request_in_flight_across_the_whole_window_counts(sent):
    history, seen, ledger = run_model(sent)
    ledger = timed(ledger, step=10.0)  # each request in flight for 50 s
    inside = fault("short", ledger[3].sent_at + 1, ledger[3].sent_at + 2)  # between two sends
    assert judge(sent, ledger, history, seen, faults=[inside]).verdict == "Pass"


def test_reaching_the_catch_up_deadline_is_its_own_finding(sent):
    history, seen, ledger = run_model(sent)
    late = judge(sent, ledger, history, seen, caught_up=False, deadline="8s")
    assert late.verdict == "Inconclusive" and [a.invariant for a in late.inconclusive] == ["catch-up"]
    assert "8s" in late.inconclusive[0].message
    victim = next(a for a in history.audit if a.status == "discarded")
    damaged = dataclasses.replace(history, audit=[a for a in history.audit if a is not victim])
    lost = judge(sent, ledger, damaged, seen, caught_up=False, deadline="8s")
    assert lost.verdict == "Fail" and {a.invariant for a in lost.inconclusive} == {"catch-up"}
    assert "acked webhooks never stored (tolerated: 0)" in {a.message for a in lost.anomalies}  # by default


# ---------------------------------------------------------------- the independent oracle


def test_the_oracle_states_the_readme_rules():
    statuses = {
        ("paid", "fulfilled"): "SHIPPED",
        ("pending", "partial"): "CONFIRMED",
        ("paid", "restocked"): "CANCELLED",
        ("pending", None): "PENDING",
        ("authorized", None): "PENDING",
        ("paid", None): "CONFIRMED",
        ("partially_paid", None): "CONFIRMED",
        ("partially_refunded", None): "CONFIRMED",
        ("refunded", None): "CANCELLED",
        ("voided", None): "CANCELLED",
        ("something_new", None): "PENDING",
        ("refunded", "unheard_of"): "CANCELLED",
    }
    assert {k: oracle.expected_status(*k) for k in statuses} == statuses
    fees = {
        "0": "9.99",
        "49.99": "9.99",
        "50": "7.99",
        "50.00": "7.99",
        "99.99": "7.99",
        "100": "5.99",
        "199.99": "5.99",
        "200.00": "0.00",
        "1000": "0.00",
    }
    assert {t: str(oracle.expected_fee(t)) for t in fees} == fees


def test_a_wrong_fee_tier_in_the_shared_domain_code_is_caught(sent, monkeypatch: pytest.MonkeyPatch):
    """The workload, the reference model and the processor all ask fincart_core.domain; the oracle does not."""

    def off_by_a_tier(total: Decimal) -> Decimal:  # each tier's bound read as the next tier's
        return Decimal("7.99") if total < 50 else Decimal("5.99") if total < 100 else Decimal("0.00")

    monkeypatch.setattr(workload, "shipping_fee", off_by_a_tier)
    history, seen, ledger = run_model(sent)
    result = verdict(sent, ledger, history, seen)
    assert failed(result) == {"I2"}
    assert [a.message for a in result.anomalies] == [
        "final status or shipping fee differs from the domain rules (README)"
    ]


# ---------------------------------------------------------------- counterexamples


def test_a_violation_comes_with_a_counterexample_per_sample_order(sent):
    history, seen, ledger = run_model(sent)
    ledger = timed(ledger)
    victim = next(a for a in history.audit if a.status == "discarded")
    damaged = dataclasses.replace(history, audit=[a for a in history.audit if a is not victim])
    ctx = Context(sent, ledger, damaged, seen, faults=[fault("kill", 999.0, 1100.0)])
    result = verify(ctx, set(ALL_INVARIANTS))
    [example] = counterexamples(ctx, result.findings)
    [order] = example.orders
    assert example.invariant == "I5" and order.order_id == victim.order_id
    lost = next(w for w in order.sent if w.webhook_id == victim.webhook_id)
    assert (lost.outcome, lost.status, lost.faults) == ("lost", 200, ["kill"])
    assert order.row is not None and order.row.version == len(order.versions_seen)
    assert f"{victim.webhook_id}: discarded" not in order.audit and order.audit


# ---------------------------------------------------------------- edges (each kills a mutant, see mutation/)


def seen_at(order_id: str, version: int, webhook_id: str = "w", seq: int = 0) -> Seen:
    return Seen(
        kind="event",
        seq=seq,
        order_id=order_id,
        version=version,
        status="CONFIRMED",
        shipping_fee="5.99",
        last_webhook_id=webhook_id,
        received_at=0.0,
    )


def row_at(order_id: str, version: int | None, webhook_id: str = "w") -> OrderRow:
    return OrderRow(order_id, "CONFIRMED", Decimal("5.99"), version, webhook_id)


def test_delivery_gaps_run_from_version_one_to_the_stored_version():
    assert _delivery_gaps([], [row_at("o", 2)]) == (["o@v1", "o@v2"], [])
    assert _delivery_gaps([seen_at("o", 1)], [row_at("o", 2)]) == (["o@v2"], [])
    assert _delivery_gaps([seen_at("o", 1), seen_at("o", 3)], [row_at("o", 3)]) == (["o@v2"], [])
    # a client that holds a version the row never got (NULL version) saw something never stored
    assert _delivery_gaps([seen_at("o", 1)], [row_at("o", None)]) == ([], ["o"])
    assert _delivery_gaps([seen_at("o", 2)], [row_at("o", 2, "x")]) == (["o@v1"], ["o"])
    assert _delivery_gaps([seen_at("o", 1, "w")], [row_at("o", 1, "a")]) == ([], ["o"])
    assert _delivery_gaps([seen_at("o", 1, "w")], [row_at("o", 2, "x")]) == (["o@v2"], [])  # behind: a gap
    assert _delivery_gaps([], [row_at("o", None)]) == ([], [])
    # a second copy of the version held is a duplicate, whatever it says
    assert _delivery_gaps([seen_at("o", 1, "w"), seen_at("o", 1, "x")], [row_at("o", 1, "w")]) == ([], [])
    assert _delivery_gaps([seen_at("o", 1), seen_at("o", 1), seen_at("o", 2)], [row_at("o", 2)]) == ([], [])
    assert _delivery_gaps([seen_at("o", 1), seen_at("o", 2), seen_at("o", 1)], [row_at("o", 2)]) == ([], [])  # late


def test_applied_twice_is_one_webhook_at_two_versions():
    assert _applied_twice([seen_at("o", 1, "a"), seen_at("o", 2, "a"), seen_at("o", 3, "b"), seen_at("o", 3, "b")]) == [
        "a"
    ]


def test_a_poison_webhook_dead_lettered_is_expected_applied_it_is_unexpected():
    sent = full_plan(
        Load(
            orders=3,
            updates_per_order=6,
            poison_ratio=0.5,
            invalid_signature_ratio=0.3,
            poison_kinds=["schema"],
            seed=5,
        )
    )
    poison = next(r.webhook for r in sent if r.kind == "poison")

    forged = next(r.webhook for r in sent if r.kind == "invalid_signature")

    def unexpected(webhook: Webhook, status: str) -> list[str]:
        return Context(
            sent, None, History([], [AuditRow(webhook.webhook_id, webhook.order_id, status)]), None
        ).unexpected

    assert [unexpected(poison, s) for s in ("failed", "processed", "discarded")] == [[], *[[poison.webhook_id]] * 2]
    assert unexpected(forged, "failed") == [forged.webhook_id]


def test_an_inconclusive_reason_is_cut_at_1000_characters(sent):
    history, seen, ledger = run_model(sent)
    idle = [FaultRecord(name=f"fault-{n:03}", type="podKill", result="failed", message="x" * 40) for n in range(40)]
    result = judge(sent, ledger, history, seen, faults=[FaultRecord(name="never", type="podKill"), *idle])
    assert result.verdict == "Inconclusive" and len(result.reason or "") == 1000
    assert (result.reason or "").startswith("coverage: fault never (podKill) injected: it never acted")


class FakeConnection:
    """Answers settle's poll with (audit rows, sum of versions), one answer per poll, the last one repeated;
    read_history's two queries with ``tables`` (orders, audit_log)."""

    def __init__(self, *answers: tuple[int, int], tables: tuple[list[dict], ...] = ()) -> None:
        self.answers = list(answers)
        self.tables = list(tables)
        self.closed = False

    async def fetchrow(self, *_: object, **__: object) -> tuple[int, int]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def fetch(self, *_: object, **__: object) -> list[dict]:
        return self.tables.pop(0)

    async def close(self) -> None:
        self.closed = True


async def test_settle_polls_until_the_store_and_the_clients_caught_up(monkeypatch: pytest.MonkeyPatch):
    # a mutant that never sees the store caught up spins until the timeout: 5 s, polling every 10 ms
    def settled(
        conn: FakeConnection, timeout: float, observed: list[Seen] | None = None, poll_s: float = 0.01
    ) -> object:
        async def connect(*_: object, **__: object) -> FakeConnection:
            return conn

        monkeypatch.setattr(verify_module.asyncpg, "connect", connect)
        return settle("postgresql://localhost/db", ["o", "p"], 3, timeout, observed, poll_s=poll_s)

    conn = FakeConnection((2, 1), (3, 4))
    assert await settled(conn, 5) is True and conn.answers == [(3, 4)] and conn.closed
    assert await settled(FakeConnection((2, 1)), 0) is False
    assert await settled(FakeConnection((4, 1)), 0) is True  # more audit rows than expected: the checks judge them
    assert await settled(FakeConnection((2, 1)), 1.05, poll_s=0.05) is False  # gives up 1.05 s from now
    reset = Seen(
        kind="reset", seq=0, order_id="", version=0, status="", shipping_fee="0", last_webhook_id="", received_at=0
    )
    clients = [reset, seen_at("o", 1), seen_at("o", 2), seen_at("p", 2)]
    assert await settled(FakeConnection((3, 4)), 5, clients) is True
    assert await settled(FakeConnection((3, 5)), 0, clients) is False
    assert await settled(FakeConnection((3, 3)), 0, clients) is True  # a client ahead of the store: I6 says so


async def test_read_history_names_the_null_columns(monkeypatch: pytest.MonkeyPatch):
    row = {c: 1 for c in REQUIRED_COLUMNS} | {"shopify_order_id": "o", "status": "PENDING", "shipping_fee": None}
    row["last_webhook_id"] = "w"
    conn = FakeConnection(tables=([row], [{"webhook_id": "w", "shopify_order_id": "o", "status": "processed"}]))

    async def connect(*_: object, **__: object) -> FakeConnection:
        return conn

    monkeypatch.setattr(verify_module.asyncpg, "connect", connect)
    history = await read_history("postgresql://localhost/db", ["o"])
    assert history == History(
        [OrderRow("o", "PENDING", None, 1, "w", ("shipping_fee",))], [AuditRow("w", "o", "processed")]
    )
    assert conn.closed


def test_transient_first_answers_and_any_2xx_are_documented_a_forged_webhook_must_get_401(sent):
    history, seen, ledger = run_model(sent)
    valid = [n for n, e in enumerate(ledger) if e.valid]
    first = dict(zip(valid, (0, 429, 502, 503, 504, 202, 299), strict=False))  # transient, then 200; or any 2xx
    ledger = [e.model_copy(update={"first_status": first[n]}) if n in first else e for n, e in enumerate(ledger)]
    assert verdict(sent, ledger, history, seen).verdict == "Pass"
    for status in (199, 300):
        odd = [e.model_copy(update={"first_status": status}) if n == valid[7] else e for n, e in enumerate(ledger)]
        assert failed(verdict(sent, odd, history, seen)) == {"I7"}
    forged = next(n for n, e in enumerate(ledger) if e.kind == "invalid_signature")
    refused = [e.model_copy(update={"status": 403}) if n == forged else e for n, e in enumerate(ledger)]
    assert failed(verdict(sent, refused, history, seen)) == {"I7"}


def test_two_rows_for_one_order_fail_i1(sent):
    history, seen, ledger = run_model(sent)
    doubled = dataclasses.replace(history, orders=[*history.orders, history.orders[0]])
    assert "I1" in failed(verdict(sent, ledger, doubled, seen))
    older = next(r.webhook.webhook_id for r in sent if r.valid and r.webhook.order_id == history.orders[0].order_id)
    second = dataclasses.replace(history.orders[0], last_webhook_id=older)  # only the first row is judged by I2
    assert "I2" not in failed(
        verdict(sent, ledger, dataclasses.replace(history, orders=[*history.orders, second]), seen)
    )
    stale, _, _ = run_model(sent, LastWins())
    twice = dataclasses.replace(stale, orders=[*stale.orders, *stale.orders])
    assert (
        verdict(sent, ledger, twice, seen).counts.stale_overwrites
        == verdict(sent, ledger, stale, seen).counts.stale_overwrites
    )


def test_versions_beyond_the_processed_webhooks_are_duplicates_even_unobserved(sent):
    history, _, ledger = run_model(sent)
    row = history.orders[0]
    bumped = dataclasses.replace(
        history, orders=[dataclasses.replace(row, version=row.version + 1), *history.orders[1:]]
    )
    assert verdict(sent, ledger, bumped, None).counts.duplicated == 1
    unversioned = History([dataclasses.replace(row, version=None)], [])
    assert Context(sent, ledger, unversioned, None).applied_twice == ([], 0)


def test_a_finding_names_its_order_by_webhook_order_version_or_order_id(sent):
    history, seen, _ = run_model(sent)
    ctx = Context(sent, None, history, seen)
    order = history.orders[0].order_id
    webhook = next(r.webhook for r in sent if r.webhook.order_id == order)
    unknown = ("nobody@v1", "aaa@v1", "zzz")  # ids sorting before and after every order id
    rowless = Context(sent, None, dataclasses.replace(history, orders=history.orders[1:]), seen)
    assert rowless.order_of(order) == order  # it got webhooks, though no row
    assert [ctx.order_of(s) for s in (webhook.webhook_id, f"{order}@v2", order, *unknown)] == [order] * 3 + [None] * 3


def test_a_row_holding_another_webhook_or_an_audit_row_under_another_order_is_caught(sent):
    history, seen, ledger = run_model(sent)
    for stranger in ("a-stranger", "zz-stranger"):  # sorting before and after every webhook id
        other = dataclasses.replace(history.orders[0], last_webhook_id=stranger)
        damaged = dataclasses.replace(history, orders=[other, *history.orders[1:]])
        assert "final state is not the newest webhook's (updated_at, id)" in {
            a.message for a in verdict(sent, ledger, damaged, seen).anomalies
        }
    for stranger in ("a-stranger", "zz-stranger"):  # sorting before and after every order id
        moved = dataclasses.replace(history.audit[0], order_id=stranger)
        misfiled = dataclasses.replace(history, audit=[moved, *history.audit[1:]])
        assert "audit rows filed under another order" in {
            a.message for a in verdict(sent, ledger, misfiled, seen).anomalies
        }


def test_rejected_counts_the_4xx_answers_to_forged_webhooks(sent):
    history, seen, ledger = run_model(sent)
    forged = [n for n, e in enumerate(ledger) if not e.valid]
    answers = dict(zip(forged, (400, 499, 399, 500, 503), strict=False))  # the rest stay 401
    ledger = [e.model_copy(update={"status": answers[n]}) if n in answers else e for n, e in enumerate(ledger)]
    assert verdict(sent, ledger, history, seen).counts.rejected == len(forged) - 3
    accepted = [e.model_copy(update={"status": 200}) if not e.valid else e for e in ledger]
    assert verdict(sent, accepted, history, seen).counts.rejected == 0


def test_a_fee_above_the_rule_fails_i2_and_a_version_below_the_processed_count_fails_i4(sent):
    history, seen, ledger = run_model(sent)
    row = history.orders[0]
    dear = dataclasses.replace(
        history, orders=[dataclasses.replace(row, shipping_fee=Decimal("99.99")), *history.orders[1:]]
    )
    assert "final status or shipping fee differs from the domain rules (README)" in {
        a.message for a in verdict(sent, ledger, dear, seen).anomalies
    }
    behind = dataclasses.replace(
        history, orders=[dataclasses.replace(row, version=row.version - 1), *history.orders[1:]]
    )
    failing = failed(verdict(sent, ledger, behind, seen))
    assert "I4" in failing and "I5" not in failing  # a version short is no duplicate


def test_a_row_ahead_of_the_acknowledged_history_is_no_stale_overwrite(sent):
    history, seen, ledger = run_model(sent)
    winner = history.orders[0].last_webhook_id  # now never acknowledged nor audited
    ledger = [
        e.model_copy(update={"status": 503, "first_status": 503}) if e.webhook_id == winner else e for e in ledger
    ]
    ahead = dataclasses.replace(history, audit=[a for a in history.audit if a.webhook_id != winner])
    assert verdict(sent, ledger, ahead, seen).counts.stale_overwrites == 0
