"""The evidence behind a verdict: a counterexample per violation (what happened to a few of the orders it
concerns) and the per-webhook timeline the report's plots are drawn from."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fincart_chaos.outcomes import active_faults
from fincart_chaos.verify import Context, Finding

SAMPLE_ORDERS = 10


class SentWebhook(BaseModel):
    webhook_id: str
    kind: str  # valid | duplicate | invalid_signature
    updated_at: str
    status: int  # the final HTTP answer (0: none)
    latency_ms: float
    sent_at: float
    done_at: float
    outcome: str | None = None
    faults: list[str] = Field(default_factory=list)  # faults active while it was in flight


class StoredRow(BaseModel):
    status: str | None
    shipping_fee: str | None
    version: int | None
    last_webhook_id: str | None


class OrderEvidence(BaseModel):
    order_id: str
    expected_webhook: str | None  # the newest applied webhook (what I2 expects the row to hold)
    sent: list[SentWebhook]
    row: StoredRow | None
    audit: list[str]  # "<webhook id>: <status>"
    versions_seen: list[int]  # versions the observers got, in arrival order


class Counterexample(BaseModel):
    invariant: str
    message: str
    orders: list[OrderEvidence]


class TimelinePoint(BaseModel):
    """One webhook for the plots: when it was sent and answered, and its outcome class."""

    sent_at: float
    done_at: float
    latency_ms: float
    outcome: str
    acked: bool


def order_evidence(ctx: Context, order_id: str) -> OrderEvidence:
    outcome = {o.webhook_id: o.outcome for o in ctx.outcomes}
    sent = []
    for entry in sorted((e for e in ctx.ledger or [] if e.order_id == order_id), key=lambda e: e.sent_at):
        webhook = ctx.webhooks.get(entry.webhook_id)
        sent.append(
            SentWebhook(
                webhook_id=entry.webhook_id,
                kind=entry.kind,
                updated_at=webhook.updated_at.isoformat() if webhook else "?",
                status=entry.status,
                latency_ms=entry.latency_ms,
                sent_at=entry.sent_at,
                done_at=entry.done_at,
                outcome=outcome.get(entry.webhook_id),
                faults=active_faults(ctx.faults, entry.sent_at, entry.done_at),
            )
        )
    if ctx.ledger is None:  # no answers known: what the spec says was sent
        sent = [
            SentWebhook(
                webhook_id=r.webhook.webhook_id,
                kind=r.kind,
                updated_at=r.webhook.updated_at.isoformat(),
                status=0,
                latency_ms=0.0,
                sent_at=0.0,
                done_at=0.0,
            )
            for r in ctx.requests
            if r.webhook.order_id == order_id
        ]
    rows = ctx.rows.get(order_id, [])
    row = rows[0] if rows else None
    newest = ctx.newest.get(order_id)
    return OrderEvidence(
        order_id=order_id,
        expected_webhook=newest.webhook_id if newest else None,
        sent=sent,
        row=StoredRow(
            status=row.status,
            shipping_fee=str(row.shipping_fee) if row.shipping_fee is not None else None,
            version=row.version,
            last_webhook_id=row.last_webhook_id,
        )
        if row
        else None,
        audit=[f"{a.webhook_id}: {a.status}" for a in ctx.history.audit if a.order_id == order_id],
        versions_seen=[s.version for s in ctx.observed or [] if s.order_id == order_id],
    )


def counterexample(ctx: Context, finding: Finding) -> Counterexample:
    orders: list[str] = []
    for sample in sorted(set(finding.ids)):
        order = ctx.order_of(sample)
        if order and order not in orders:
            orders.append(order)
        if len(orders) == SAMPLE_ORDERS:
            break
    return Counterexample(
        invariant=finding.check, message=finding.message, orders=[order_evidence(ctx, o) for o in orders]
    )


def counterexamples(ctx: Context, findings: list[Finding]) -> list[Counterexample]:
    return [counterexample(ctx, f) for f in findings if not f.inconclusive]


def timeline(ctx: Context) -> list[TimelinePoint]:
    return [
        TimelinePoint(
            sent_at=round(o.sent_at, 3),
            done_at=round(o.done_at, 3),
            latency_ms=o.latency_ms,
            outcome=o.outcome,
            acked=o.answer == "ok",
        )
        for o in sorted(ctx.outcomes, key=lambda o: o.done_at)
    ]
