"""The history checks on what the one-at-a-time reference model stores and publishes, then damaged:
a correct history passes each check, each kind of damage fails it naming its invariant."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
from fincart_chaos.history_checks import (
    AuditEntry,
    Extras,
    FaultWindow,
    OrderColumns,
    PageItem,
    ReadBack,
    StoreView,
    events_vs_history,
    expected_columns,
    fault_windows,
    held_versions,
    idle_faults,
    observer_views,
    on_request_path,
    page_walk,
    poison_outcomes,
    reads_behind_events,
    stored_columns,
)
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.observer import Seen
from fincart_chaos.verify import ALL_INVARIANTS, AuditRow, Context, History, OrderRow, verify
from fincart_chaos.workload import Request, Webhook, full_plan, poison_kind
from fincart_core.contracts.chaostest import Load
from fincart_core.contracts.report import FaultRecord

from tests.support.processor_model import Model

LOAD = Load(
    orders=5,
    updates_per_order=12,
    tie_ratio=0.4,
    out_of_order_ratio=0.5,
    seed=11,
    poison_ratio=0.2,
    poison_kinds=["schema", "calendarEdge"],
)


@dataclasses.dataclass
class Run:
    """A correct pipeline's history for LOAD, in plain data."""

    by_id: dict[str, Webhook]
    model: Model
    audit: list[AuditEntry]
    events: list[Seen]
    rows: dict[str, OrderColumns]
    versions: dict[str, int]
    winners: dict[str, OrderColumns]


def seen(kind: str, seq: int, w: Webhook, version: int) -> Seen:
    c = expected_columns(w)
    return Seen(
        kind=kind,
        seq=seq,
        order_id=w.order_id,
        version=version,
        status=c.status,
        shipping_fee=str(c.shipping_fee),
        last_webhook_id=w.webhook_id,
        received_at=0.0,
        total_price=c.total_price,
        last_external_updated_at=c.last_external_updated_at,
    )


def reset(seq: int) -> Seen:
    return Seen(
        kind="reset", seq=seq, order_id="", version=0, status="", shipping_fee="0", last_webhook_id="", received_at=0.0
    )


@pytest.fixture
def run() -> Run:
    requests = full_plan(LOAD)
    by_id = {r.webhook.webhook_id: r.webhook for r in requests if r.valid}
    model = Model()
    for r in requests:
        if r.valid:
            model.apply(r.webhook)
    audit = [AuditEntry(w, by_id[w].order_id, status, version) for w, (status, version) in model.audit.items()]
    events = [seen("event", n, by_id[w], v) for n, (_, v, w) in enumerate(model.events, 1)]
    rows = {o: expected_columns(by_id[r.last_webhook_id]) for o, r in model.rows.items()}
    versions = {o: r.version for o, r in model.rows.items()}
    winners = {}
    for w in by_id.values():
        if w.order_id not in winners or w.sort_key > by_id[winners[w.order_id].last_webhook_id].sort_key:
            winners[w.order_id] = expected_columns(w)
    return Run(by_id, model, audit, events, rows, versions, winners)


def test_the_model_history_passes_every_check(run: Run):
    assert stored_columns(run.winners, run.rows) == []
    assert events_vs_history(run.events, run.audit, {i: expected_columns(w) for i, w in run.by_id.items()}) == []
    assert reads_behind_events([ReadBack(s.order_id, s.version, s.version + 1) for s in run.events]) == []
    committed = {(a.order_id, a.version): a.webhook_id for a in run.audit if a.status == "processed"}
    items = [PageItem(o, run.versions[o], c) for o, c in run.rows.items()]
    assert page_walk(items, run.rows, rows=run.rows, versions=run.versions, committed=committed, quiescent=True) == []
    assert observer_views(run.events, [run.events], run.rows, run.versions) == []


def test_the_workload_makes_ties_matter(run: Run):
    """The winner of some orders is a tied webhook that arrived first: a processor that lets the later
    arrival win a tie would store another one."""
    ties = [w for w in run.by_id.values() if w.webhook_id.startswith("chaos-tie-")]
    assert len(ties) >= 10
    assert any(run.winners[o].last_webhook_id.startswith("chaos-tie-") for o in run.winners)


@pytest.mark.parametrize(
    "column,value",
    [
        ("total_price", Decimal("0.01")),
        ("status", "CANCELLED"),
        ("shipping_fee", Decimal("1.23")),
        ("last_webhook_id", "someone-else"),
        ("last_external_updated_at", None),
    ],
)
def test_each_stored_column_is_checked_against_the_winner(run: Run, column: str, value: object):
    order_id = next(iter(run.rows))
    row = run.rows[order_id]
    if column == "last_external_updated_at":
        value = row.last_external_updated_at + timedelta(microseconds=1)  # type: ignore[operator]
    damaged = {**run.rows, order_id: dataclasses.replace(row, **{column: value})}
    [violation] = stored_columns(run.winners, damaged)
    assert (violation.invariant, violation.ids) == ("I2", [order_id]) and column in violation.message


def test_a_tie_broken_the_wrong_way_fails_i2(run: Run):
    tied = next(o for o, c in run.winners.items() if c.last_webhook_id.startswith("chaos-tie-"))
    winner = run.by_id[run.winners[tied].last_webhook_id]
    loser = next(
        w
        for w in run.by_id.values()
        if w.order_id == tied and w.updated_at == winner.updated_at and w.webhook_id != winner.webhook_id
    )
    damaged = {**run.rows, tied: expected_columns(loser)}
    assert {v.invariant for v in stored_columns(run.winners, damaged)} == {"I2"}


def test_events_must_equal_the_committed_history(run: Run):
    expected = {i: expected_columns(w) for i, w in run.by_id.items()}
    discarded = next(run.by_id[a.webhook_id] for a in run.audit if a.status == "discarded")
    processed = next(a for a in run.audit if a.status == "processed")
    cases = {
        "discarded": seen("event", 999, discarded, 7),
        "never committed": seen("event", 999, run.by_id[processed.webhook_id], 99),
        "not the one committed": seen("event", 999, run.by_id[processed.webhook_id], processed.version + 1)
        if (processed.order_id, processed.version + 1) in {(a.order_id, a.version) for a in run.audit}
        else None,
        "content": next(e for e in run.events if e.last_webhook_id == processed.webhook_id).model_copy(
            update={"total_price": Decimal("123.45")}
        ),
        "more than one event": seen("event", 999, run.by_id[processed.webhook_id], processed.version or 0),
        "webhook is not the one committed": next(
            e for e in run.events if e.last_webhook_id == processed.webhook_id
        ).model_copy(
            update={"last_webhook_id": "a-stranger", "seq": 1000}  # sorts before every webhook id
        ),
    }
    for words, extra in cases.items():
        if extra is None:
            continue
        found = events_vs_history([*run.events, extra], run.audit, expected)
        # a second event at an existing version is also "more than one event"
        assert {v.invariant for v in found} == {"I6"} and any(words in v.message for v in found), (words, found)
    # a discarded webhook's audit row that notes the version it saw commits nothing
    seen_version = AuditEntry("late-duplicate", processed.order_id, "discarded", processed.version)
    assert events_vs_history(run.events, [*run.audit, seen_version], expected) == []
    # the same event seen twice (same sequence: a resume overlap) is one event
    assert events_vs_history([*run.events, run.events[0]], run.audit, expected) == []


def test_a_read_older_than_its_event_fails_i6():
    assert reads_behind_events([ReadBack("a", 3, 3), ReadBack("b", 1, 2)]) == []
    [v] = reads_behind_events([ReadBack("a", 3, 2), ReadBack("b", 1, None), ReadBack("c", 1, 1)])
    assert v.invariant == "I6" and v.ids == ["a@v3", "b@v1"] and "before its commit" in v.message


def test_resumed_observers(run: Run):
    events = run.events
    # resumed from since: a repeat is fine; after a snapshot an order may start at any version
    cut = len(events) // 2
    snapshot_at = {s.order_id: s for s in events[:cut]}
    via_snapshot = [
        *events[:5],
        reset(cut),
        *(s.model_copy(update={"kind": "snapshot"}) for s in snapshot_at.values()),
        *events[cut - 3 :],
    ]
    assert observer_views(events, [events[:cut] + events[cut - 2 :], via_snapshot], run.rows, run.versions) == []
    # a snapshot stamped one too far: the resume after it skips the next event
    skipped = [
        *events[:5],
        reset(cut),
        *(s.model_copy(update={"kind": "snapshot"}) for s in snapshot_at.values()),
        *events[cut + 1 :],
    ]
    found = {v.message: v.ids for v in observer_views(events, [skipped], run.rows, run.versions)}
    victim = events[cut]
    gap = f"{victim.order_id}@v{victim.version}"
    assert any(gap in ids for ids in found.values()), found
    assert all("resumed observer" in m for m in found)
    # nothing at all, or a version beyond the stored one, or another webhook at it
    assert observer_views(events, [[]], run.rows, run.versions)[0].ids == sorted(run.rows)
    ahead = events[-1].model_copy(update={"version": events[-1].version + 1})
    stranger_id = events[-1].model_copy(update={"last_webhook_id": "zz-stranger"})  # sorts after every id
    for last in (ahead, stranger_id):
        found = {v.message: v.ids for v in observer_views(events, [[*events[:-1], last]], run.rows, run.versions)}
        assert found["a resumed observer did not end with the stored version"] == [last.order_id]
    # holding the stored webhook at an earlier version
    last = events[-1]
    early = [e for e in events if e.order_id != last.order_id] + [last.model_copy(update={"version": last.version - 1})]
    found = {v.message: v.ids for v in observer_views(events, [early], run.rows, run.versions)}
    assert found["a resumed observer did not end with the stored version"] == [last.order_id]
    # ending short of the stored version, even holding the stored webhook
    behind = events[-1].model_copy(update={"version": events[-1].version - 1})
    assert observer_views(events, [[*events[:-1], behind]], run.rows, run.versions)[0].message.startswith(
        "a resumed observer did not end"
    )
    assert observer_views(events, [events[:-1]], run.rows, run.versions)[0].message.startswith(
        "a resumed observer did not end"
    )
    # a state the steady observer never saw (an event published to some clients only, or made up)
    stranger = events[0].model_copy(update={"last_webhook_id": "never-sent", "seq": 10_000})
    [v] = observer_views(events, [[*events, stranger]], run.rows, run.versions)
    assert v.message == "a resumed observer got an event the steady observer never saw"
    assert v.ids == [f"{stranger.order_id}@v{stranger.version}"]


def test_held_versions_counts_a_gap_from_one_without_a_snapshot():
    w = full_plan(Load(orders=1, updates_per_order=1))[0].webhook
    w = Webhook("w", "o", 0, w.updated_at, w.payload)
    held, gaps = held_versions([seen("event", 1, w, 3)])
    assert gaps == ["o@v1", "o@v2"] and held["o"].version == 3
    held, gaps = held_versions([reset(0), seen("event", 1, w, 3)])
    assert gaps == [] and held["o"].version == 3
    # a snapshot entry sets the order, whatever it held
    held, _ = held_versions([seen("event", 1, w, 3), seen("snapshot", 2, w, 2)])
    assert held["o"].version == 2
    # a second copy of the version held is a duplicate: it changes nothing
    other = Webhook("x", "o", 0, w.updated_at, w.payload)
    held, gaps = held_versions([seen("event", 1, w, 1), seen("event", 2, other, 1)])
    assert gaps == [] and held["o"].last_webhook_id == "w"


def test_snapshots_count_as_seen_by_the_steady_observer_only_events_must_come_from_it(run: Run):
    events = run.events
    first = events[0]
    steady = [reset(0), first.model_copy(update={"kind": "snapshot"}), *events[1:]]  # it started with a snapshot
    assert observer_views(steady, [events], run.rows, run.versions) == []
    # a resumed snapshot is read from the store (judged against the rows), not from the stream
    unseen = first.model_copy(update={"kind": "snapshot", "last_webhook_id": "read-from-the-store"})
    assert observer_views(events, [[reset(0), unseen, *events[1:]]], run.rows, run.versions) == []


def test_the_page_walk(run: Run):
    committed = {(a.order_id, a.version): a.webhook_id for a in run.audit if a.status == "processed"}
    items = [PageItem(o, run.versions[o], c) for o, c in run.rows.items()]
    kwargs = {"rows": run.rows, "versions": run.versions, "committed": committed}
    twice = page_walk([*items, items[0]], run.rows, quiescent=False, **kwargs)
    assert [(v.invariant, v.ids) for v in twice] == [("I1", [items[0].order_id])]
    assert "more than one" in twice[0].message
    skipped = page_walk(items[1:], run.rows, quiescent=True, **kwargs)
    assert [(v.invariant, v.ids) for v in skipped] == [("I1", [items[0].order_id])] and "skipped" in skipped[0].message
    assert page_walk(items[1:], run.rows, quiescent=False, **kwargs) == []  # during the load: it may have moved
    ahead = PageItem(items[0].order_id, items[0].version + 1, items[0].columns)
    assert "GET /orders differs from the stored row" in {
        v.message for v in page_walk([ahead, *items[1:]], run.rows, quiescent=True, **kwargs)
    }
    old = PageItem(items[0].order_id, items[0].version - 1, items[0].columns)
    assert {v.message for v in page_walk([old, *items[1:]], run.rows, quiescent=True, **kwargs)} == {
        "GET /orders listed a state that was never committed",
        "GET /orders differs from the stored row",
    }
    # other runs' orders in the same table are not this test's business
    stranger = PageItem("someone-elses-order", 1, items[0].columns)
    assert page_walk([*items, stranger], run.rows, quiescent=True, **kwargs) == []


def entry(webhook_id: str, status: int, kind: str = "poison", **kw: object) -> LedgerEntry:
    return LedgerEntry(
        webhook_id=webhook_id,
        order_id="o",
        kind=kind,
        status=status,
        first_status=status,  # type: ignore[arg-type]
        attempts=kw.pop("attempts", 1),
        sent_at=kw.pop("sent_at", 0.0),  # type: ignore[arg-type]
        done_at=kw.pop("done_at", 0.0),
        latency_ms=1.0,
        **kw,
    )  # type: ignore[arg-type]


def test_poison_outcomes():
    audit = {
        "dead": AuditEntry("dead", "o", "failed"),
        "applied": AuditEntry("applied", "o", "processed"),
        "dropped": AuditEntry("dropped", "o", "discarded"),
        "leaked": AuditEntry("leaked", "o", "failed"),
    }
    audit["dead-202"] = AuditEntry("dead-202", "o", "failed")
    ledger = [
        entry("rejected", 422),
        entry("dead", 200),
        entry("applied", 200),
        entry("dropped", 200),
        entry("stuck", 200),
        entry("unanswered", 503),
        entry("crashed", 500),
        entry("leaked", 422),
        entry("won", 200),
        entry("dead-202", 202),
    ]
    kinds = {e.webhook_id: "calendarEdge" for e in ledger}
    found = {v.message: (v.invariant, v.ids) for v in poison_outcomes(kinds, ledger, audit, winners=["won"])}
    assert found == {
        "poison webhooks applied (processed or discarded) instead of rejected or dead-lettered": (
            "I5",
            ["applied", "dropped", "won"],
        ),
        "poison webhooks answered 4xx but stored anyway": ("I5", ["leaked"]),
        "poison webhooks accepted but never dead-lettered (stuck or silently dropped)": ("I3", ["stuck"]),
        "poison webhooks answered neither 4xx nor 2xx": ("I7", ["unanswered", "crashed"]),
    }
    assert poison_outcomes({"rejected": "schema", "dead": "calendarEdge"}, ledger, audit, winners=[]) == []
    # without a ledger: no audit row counts as rejected
    assert poison_outcomes({"gone": "schema", "dead": "calendarEdge"}, None, audit, winners=[]) == []
    # a body that breaks the order contract must be refused by ingest, a dead letter is not enough
    [v] = poison_outcomes({"dead": "schema"}, ledger, audit, winners=[])
    assert (v.invariant, v.ids) == ("I7", ["dead"]) and "must answer 422" in v.message


def test_fault_windows_count_failed_retried_and_answered():
    nats = FaultRecord(name="restart-nats", type="brokerRestart", started_at=100.0, healed_at=107.0, result="healed")
    kill = FaultRecord(name="kill-processor", type="podKill", started_at=200.0, healed_at=202.0, result="healed")
    ledger = [
        entry("a", 200, "valid", attempts=3, failures=[(104.0, 503), (105.5, 0)], done_at=108.0),
        entry("b", 200, "valid", attempts=1, done_at=101.0),
        entry("c", 503, "valid", attempts=2, failures=[(106.0, 503), (107.5, 503)], done_at=107.5),  # gave up
        entry("d", 200, "valid", attempts=2, failures=[(50.0, 503)], done_at=51.0),
        entry("e", 503, "valid", attempts=1, failures=[(103.0, 503)], done_at=103.0),  # one attempt, given up
        entry("f", 422, "poison", done_at=104.0),  # a final 4xx is an answer
        entry("g", 202, "valid", done_at=105.0),  # and any 2xx
    ]
    selectors = {"kill-processor": {"app.kubernetes.io/component": "processor"}}
    windows = fault_windows([nats, kill], ledger, selectors)
    assert windows == [
        FaultWindow(name="restart-nats", type="brokerRestart", failed=5, retried=2, answered=4, request_path=True),
        FaultWindow(name="kill-processor", type="podKill", failed=0, retried=0, answered=0, request_path=False),
    ]
    assert idle_faults(windows) == []
    quiet = fault_windows([nats], [entry("b", 200, "valid", done_at=101.0)], selectors)
    assert idle_faults(quiet) == ["restart-nats"]
    ingest = FaultRecord(name="kill-ingest", type="podKill", started_at=0.0, healed_at=1.0)
    assert idle_faults(fault_windows([ingest], [], {"kill-ingest": {"app.kubernetes.io/component": "ingest"}})) == [
        "kill-ingest"
    ]
    skipped = FaultRecord(name="redis", type="redisOutage", started_at=0.0, healed_at=0.0, result="skipped")
    assert fault_windows([skipped], ledger, {}) == []
    assert [w.name for w in fault_windows([skipped, nats], ledger, selectors)] == ["restart-nats"]


def verifier_inputs(run: Run) -> tuple[list[Request], History, list[LedgerEntry]]:
    """LOAD's requests, the run's history as the verifier reads it, and a ledger of the expected answers."""
    requests = full_plan(LOAD)
    history = History(
        orders=[OrderRow(o, c.status, c.shipping_fee, run.versions[o], c.last_webhook_id) for o, c in run.rows.items()],
        audit=[AuditRow(a.webhook_id, a.order_id, a.status) for a in run.audit],
    )
    answers = {"valid": 200, "duplicate": 200, "poison": 422}
    return requests, history, [entry(r.webhook.webhook_id, answers[r.kind], r.kind) for r in requests]


def test_the_checks_run_in_the_verifier(run: Run):
    """Registered with @check, the checks above judge a Context that carries their Extras."""
    requests, history, ledger = verifier_inputs(run)
    walk = [PageItem(o, run.versions[o], c) for o, c in run.rows.items()]
    store = StoreView(run.rows, run.versions, run.audit)

    def judge(store: StoreView, ledger: list[LedgerEntry]) -> dict[str, set[str]]:
        ctx = Context(requests, ledger, history, run.events, extras=Extras(store, walk_after=walk))
        result = verify(ctx, set(ALL_INVARIANTS))
        return {
            a.invariant: {m.message for m in result.anomalies if m.invariant == a.invariant} for a in result.anomalies
        }

    assert judge(store, ledger) == {}
    order_id = next(iter(run.rows))
    priced = dataclasses.replace(
        store, rows={**run.rows, order_id: dataclasses.replace(run.rows[order_id], total_price=Decimal("0.01"))}
    )
    # (the page walk, read before the damage, no longer matches the row either)
    assert judge(priced, ledger) == {
        "I2": {"stored total_price differs from the winning webhook's"},
        "I1": {"GET /orders differs from the stored row"},
    }
    poison = next(r for r in requests if r.kind == "poison" and poison_kind(r.webhook.webhook_id) == "schema")
    accepted = [entry(e.webhook_id, 200, "poison") if e.webhook_id == poison.webhook.webhook_id else e for e in ledger]
    dead = dataclasses.replace(store, audit=[*run.audit, AuditEntry(poison.webhook.webhook_id, "unknown", "failed")])
    assert judge(dead, accepted) == {
        "I7": {"poison webhooks that break the order contract answered 2xx (ingest must answer 422)"}
    }
    assert judge(store, accepted) == {
        "I3": {"poison webhooks accepted but never dead-lettered (stuck or silently dropped)"},
        "I7": {"poison webhooks that break the order contract answered 2xx (ingest must answer 422)"},
    }
    # I6 through the verifier: an event for a webhook that changed nothing
    discarded = next(a for a in run.audit if a.status == "discarded")
    bogus = seen("event", 10_000, run.by_id[discarded.webhook_id], 1)
    result = verify(
        Context(requests, ledger, history, [*run.events, bogus], extras=Extras(store, walk_after=walk)),
        set(ALL_INVARIANTS),
    )
    assert "events for webhooks that were discarded or failed (changed nothing)" in {
        a.message for a in result.anomalies if a.invariant == "I6"
    }
    # coverage: a broker restart while webhooks were in flight that failed none of them proves nothing
    nats = FaultRecord(name="restart-nats", type="brokerRestart", started_at=100.0, healed_at=107.0, result="healed")
    in_flight = [e.model_copy(update={"sent_at": 99.0, "done_at": 108.0}) for e in ledger]
    ctx = Context(
        requests, in_flight, history, run.events, faults=[nats], extras=Extras(store, walk_after=walk, selectors={})
    )
    result = verify(ctx, set(ALL_INVARIANTS))
    assert result.verdict == "Inconclusive" and [(a.invariant, a.message) for a in result.inconclusive] == [
        ("coverage", "fault restart-nats is on the request path but failed no request")
    ]


# ---------------------------------------------------------------- edges (each kills a mutant, see mutation/)


def test_a_resumed_observer_holding_the_stored_version_of_another_webhook_is_stale(run: Run):
    last = run.events[-1]
    other = last.model_copy(update={"last_webhook_id": "a-stranger"})  # sorts before every webhook id
    found = {v.message: v.ids for v in observer_views(run.events, [[*run.events[:-1], other]], run.rows, run.versions)}
    assert found["a resumed observer did not end with the stored version"] == [last.order_id]


def test_a_poison_webhook_answered_3xx_is_unanswered():
    odd = {"early": 199, "moved": 300, "odd": 399}
    [v] = poison_outcomes(dict.fromkeys(odd, "calendarEdge"), [entry(p, s) for p, s in odd.items()], {}, winners=[])
    assert (v.invariant, v.ids) == ("I7", list(odd))
    dead = {"late": AuditEntry("late", "o", "failed")}
    ledger = [entry("refused", 400), entry("refused-499", 499), entry("late", 299)]
    kinds = {"refused": "schema", "refused-499": "schema", "late": "calendarEdge"}
    assert poison_outcomes(kinds, ledger, dead, winners=[]) == []


def test_fault_windows_include_their_bounds_and_only_final_answers():
    nats = FaultRecord(name="restart-nats", type="brokerRestart", started_at=100.0, healed_at=101.0, result="healed")
    ledger = [
        entry("at-start", 200, "valid", attempts=2, failures=[(100.0, 503)], done_at=100.5),
        entry("at-end", 200, "valid", attempts=2, failures=[(103.0, 503)], done_at=103.5),  # heal + grace (2 s)
        entry("late", 200, "valid", done_at=103.5),
        entry("in-grace", 200, "valid", done_at=102.5),
        entry("on-start", 200, "valid", done_at=100.0),
        entry("on-end", 200, "valid", done_at=103.0),
        # final answers: 2xx, and 4xx but 429; the rest is retried
        *(entry(f"final-{s}", s, "valid", done_at=100.5) for s in (299, 400, 431, 499)),
        *(entry(f"retried-{s}", s, "valid", done_at=100.5) for s in (199, 300, 399, 429, 500)),
    ]
    [window] = fault_windows([nats], ledger, {})
    assert (window.failed, window.retried, window.answered) == (2, 2, 8)


def test_each_poison_check_reports_its_own_invariant_only(run: Run):
    requests, history, ledger = verifier_inputs(run)
    poison = [r.webhook.webhook_id for r in requests if r.kind == "poison"]
    accepted = next(p for p in poison if poison_kind(p) == "schema")  # 2xx to a schema poison: I7, and stuck: I3
    applied = next(p for p in poison if p != accepted)  # I5
    ledger = [e.model_copy(update={"status": 200}) if e.webhook_id == accepted else e for e in ledger]
    store = StoreView(run.rows, run.versions, [*run.audit, AuditEntry(applied, "o", "processed")])
    ctx = Context(requests, ledger, history, run.events, extras=Extras(store))
    order_id = next(iter(run.rows))
    won = {**run.rows, order_id: dataclasses.replace(run.rows[order_id], last_webhook_id=applied)}
    stored = Context(requests, ledger, history, run.events, extras=Extras(StoreView(won, run.versions, run.audit)))
    assert "poison webhooks applied (processed or discarded) instead of rejected or dead-lettered" in {
        a.message for a in verify(stored, {"I5"}).anomalies
    }
    expected = {
        "I3": "poison webhooks accepted but never dead-lettered (stuck or silently dropped)",
        "I5": "poison webhooks applied (processed or discarded) instead of rejected or dead-lettered",
        "I7": "poison webhooks that break the order contract answered 2xx (ingest must answer 422)",
    }
    for invariant, message in expected.items():
        messages = [(a.invariant, a.message) for a in verify(ctx, {invariant}).anomalies]
        assert (invariant, message) in messages and {i for i, _ in messages} == {invariant}
        assert len(set(messages)) == len(messages)
    # without Extras the poison checks have nothing to judge
    assert verify(dataclasses.replace(ctx, extras=None), {"I3", "I7"}).verdict == "Pass"


def test_only_processed_audit_rows_commit_a_state_the_page_walk_may_list(run: Run):
    requests, history, ledger = verifier_inputs(run)
    order_id = next(iter(run.rows))
    walk = [PageItem(o, run.versions[o], c) for o, c in run.rows.items()]
    noted = AuditEntry("late-duplicate", order_id, "discarded", run.versions[order_id])  # a version it saw
    store = StoreView(run.rows, run.versions, [*run.audit, noted])
    assert (
        verify(Context(requests, ledger, history, run.events, extras=Extras(store, walk_after=walk)), {"I1"}).anomalies
        == []
    )
    # a walk during the load may miss orders that moved between pages
    moving = Extras(StoreView(run.rows, run.versions, run.audit), walks_during=[walk[1:]])
    assert verify(Context(requests, ledger, history, run.events, extras=moving), {"I1"}).anomalies == []
    stranger = dataclasses.replace(walk[0], columns=dataclasses.replace(walk[0].columns, last_webhook_id="a-stranger"))
    [v] = page_walk([stranger], run.rows, rows=run.rows, versions=run.versions, committed={}, quiescent=False)
    assert v.message == "GET /orders listed a state that was never committed"
    committed = {(a.order_id, a.version): a.webhook_id for a in run.audit if a.status == "processed"}
    [v] = page_walk([stranger], run.rows, rows=run.rows, versions=run.versions, committed=committed, quiescent=False)
    assert v.ids == [f"{stranger.order_id}@v{stranger.version}"]


def test_snapshots_and_resets_are_not_events(run: Run):
    expected = {i: expected_columns(w) for i, w in run.by_id.items()}
    again = run.events[0].model_copy(update={"kind": "snapshot", "seq": 10_000})
    assert events_vs_history([reset(0), again, *run.events], run.audit, expected) == []
    discarded = next(run.by_id[a.webhook_id] for a in run.audit if a.status == "discarded")
    bogus = seen("event", 10_001, discarded, 1)
    assert events_vs_history([reset(0), *run.events, bogus], run.audit, expected) != []


def test_on_the_request_path_are_broker_restarts_and_ingest_faults():
    def on_path(fault_type: str, component: str) -> bool:
        record = FaultRecord(name="f", type=fault_type)
        return on_request_path(record, {"f": {"app.kubernetes.io/component": component}})

    assert on_path("brokerRestart", "nats") and on_path("podKill", "ingest")
    assert not any(on_path("podKill", c) for c in ("processor", "sync", "cache"))
    assert not on_path("brokerNodeLoss", "nats")
