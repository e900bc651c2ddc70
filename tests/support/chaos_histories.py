"""Histories for the verifier's unit tests: what a correct pipeline (the one-at-a-time reference model)
stores, what a client sees and what the runners were answered, for a given list of requests."""

from __future__ import annotations

from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.observer import Seen
from fincart_chaos.report import Report, Timings, assemble
from fincart_chaos.verify import ALL_INVARIANTS, AuditRow, Context, History, OrderRow, verify
from fincart_chaos.workload import Request, full_plan
from fincart_core.contracts.chaostest import Load
from fincart_core.contracts.report import FaultRecord

from tests.support.processor_model import Model


def entry(request: Request, status: int) -> LedgerEntry:
    w = request.webhook
    return LedgerEntry(
        webhook_id=w.webhook_id,
        order_id=w.order_id,
        kind=request.kind,
        status=status,
        first_status=status,
        attempts=1,
        sent_at=0.0,
        done_at=0.0,
        latency_ms=1.0,
    )


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
    seen = [
        Seen(
            kind="event",
            seq=n,
            order_id=o,
            version=v,
            status=by_id[w].status,
            shipping_fee=str(by_id[w].shipping_fee),
            last_webhook_id=w,
            received_at=0.0,
        )
        for n, (o, v, w) in enumerate(model.events, 1)
    ]
    ledger = [entry(r, 200 if r.valid else 401) for r in requests]
    return history, seen, ledger


def timed(ledger: list[LedgerEntry], start: float = 1000.0, step: float = 0.01) -> list[LedgerEntry]:
    """The ledger with request i sent at start + i*step and answered 5 steps later."""
    return [
        e.model_copy(update={"sent_at": start + i * step, "done_at": start + (i + 5) * step})
        for i, e in enumerate(ledger)
    ]


def failing_run() -> tuple[Report, str]:
    """A report with a lost webhook, an unknown one and a fault window over the load."""
    sent = full_plan(Load(orders=4, updates_per_order=12, invalid_signature_ratio=0.1, seed=3))
    history, seen, ledger = run_model(sent)
    ledger = timed(ledger, step=0.05)
    victim = next(a for a in history.audit if a.status == "discarded")
    unknown = next(a for a in history.audit if a.status == "discarded" and a is not victim).webhook_id
    ledger = [e.model_copy(update={"status": 0, "first_status": 0}) if e.webhook_id == unknown else e for e in ledger]
    history.audit = [a for a in history.audit if a.webhook_id not in (victim.webhook_id, unknown)]
    faults = [FaultRecord(name="kill-processor", type="podKill", started_at=1000.5, healed_at=1001.5, result="healed")]
    ctx = Context(sent, ledger, history, seen, faults=faults)
    result = verify(ctx, set(ALL_INVARIANTS))
    report = assemble(
        "broken",
        ctx,
        result,
        set(ALL_INVARIANTS),
        timings=Timings(total_s=3.0),
        notes=[],
        orders_api=None,
        performance=[],
    )
    return report, victim.webhook_id
