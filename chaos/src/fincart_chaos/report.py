"""The run report: the JSON document (``--report``), the terminal table and the operator's summary.

The JSON schema is documented in chaos/README.md. ``Report`` extends the ``ReportSummary`` the
operator copies into the ChaosTest status, so either can be parsed from the same document.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

from fincart_core.contracts.report import ReportSummary
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from fincart_chaos.evidence import Counterexample, TimelinePoint, counterexamples, timeline
from fincart_chaos.history_checks import FaultWindow
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.outcomes import in_flight, window
from fincart_chaos.verify import ALL_INVARIANTS, CHECKS, Context, History, Result

# the seed guide's performance table: (metric, Expected, Good, Excellent), seconds, lower is better
PERFORMANCE_THRESHOLDS = (("total time", 10.0, 5.0, 2.0), ("queue drain time", 30.0, 15.0, 5.0))
TERMINATION_MESSAGE_LIMIT = 4096  # bytes Kubernetes keeps of a container's termination message


class Percentiles(BaseModel):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Timings(BaseModel):
    total_s: float | None = None
    load_s: float | None = None
    drain_s: float | None = None
    settled: bool = True
    throughput_rps: float | None = None
    ack_latency_ms: Percentiles = Field(default_factory=Percentiles)
    webhook_to_websocket_ms: Percentiles = Field(default_factory=Percentiles)


class ChecklistItem(BaseModel):
    item: str
    ok: bool | None  # None: not checked in this run
    detail: str


class Rating(BaseModel):
    metric: str
    value_s: float | None
    rating: str
    expected_s: float
    good_s: float
    excellent_s: float


class CheckResult(BaseModel):
    """One registered check's result: pass, fail, inconclusive (could not be done) or skipped (not enabled)."""

    name: str
    title: str
    result: str
    messages: list[str] = Field(default_factory=list)


class Report(ReportSummary):
    name: str
    checked: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    checks: list[CheckResult] = Field(default_factory=list)
    checklist: list[ChecklistItem] = Field(default_factory=list)
    performance: list[Rating] = Field(default_factory=list)
    # per fault: the requests it failed, retried and answered (a request-path fault must fail some)
    fault_windows: list[FaultWindow] = Field(default_factory=list)
    outcomes: dict[str, int] = Field(default_factory=dict)  # webhooks per outcome class (see outcomes.py)
    lost_positions: dict[str, int] = Field(default_factory=dict)  # lost webhooks: before/between/after/alone
    counterexamples: list[Counterexample] = Field(default_factory=list)
    timeline: list[TimelinePoint] = Field(default_factory=list)  # one point per webhook, for the plots
    in_flight: dict[str, int] = Field(default_factory=dict)  # per fault occurrence: requests its window overlapped


def percentiles(values: Sequence[float]) -> Percentiles:
    if not values:
        return Percentiles()
    if len(values) == 1:
        return Percentiles(p50=values[0], p95=values[0], p99=values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return Percentiles(p50=round(cuts[49], 3), p95=round(cuts[94], 3), p99=round(cuts[98], 3))


def rate(metric: str, value: float | None) -> Rating:
    expected, good, excellent = next(t[1:] for t in PERFORMANCE_THRESHOLDS if t[0] == metric)
    if value is None:
        label = "n/a"
    else:
        label = next(
            (
                name
                for name, bound in (("Excellent", excellent), ("Good", good), ("Expected", expected))
                if value <= bound
            ),
            "Below expected",
        )
    return Rating(metric=metric, value_s=value, rating=label, expected_s=expected, good_s=good, excellent_s=excellent)


def check_results(result: Result, invariants: set[str]) -> list[CheckResult]:
    results = []
    for name, title in dict((c.name, c.title) for c in CHECKS).items():
        mine = [f for f in result.findings if f.check == name]
        if name in ALL_INVARIANTS and name not in invariants:
            outcome = "skipped"
        elif any(not f.inconclusive for f in mine):
            outcome = "fail"
        else:
            outcome = "inconclusive" if mine else "pass"
        results.append(CheckResult(name=name, title=title, result=outcome, messages=[f.message for f in mine]))
    return results


def assemble(
    name: str,
    ctx: Context,
    result: Result,
    invariants: set[str],
    *,
    timings: Timings,
    notes: list[str],
    orders_api: tuple[bool, str] | None,
    performance: list[Rating],
) -> Report:
    """The report of one run: verdict, checks, checklist, counts, evidence."""
    return Report(
        name=name,
        verdict=result.verdict,
        reason=result.reason,
        counts=result.counts,
        anomalies=result.anomalies,
        inconclusive=result.inconclusive,
        faults=list(ctx.faults),
        checked=result.checked,
        notes=result.notes + notes,
        timings=timings,
        checks=check_results(result, invariants),
        checklist=checklist(result, ctx.history, ctx.ledger, orders_api),
        performance=performance,
        outcomes=result.outcomes,
        lost_positions=result.lost_positions,
        counterexamples=counterexamples(ctx, result.findings),
        timeline=timeline(ctx),
        in_flight={
            f.name: in_flight(ctx.ledger, *span)
            for f in ctx.faults
            if ctx.ledger is not None and (span := window(f)) is not None
        },
    )


def checklist(
    result: Result, history: History, ledger: Sequence[LedgerEntry] | None, orders_api: tuple[bool, str] | None
) -> list[ChecklistItem]:
    """The seed guide's checklist, item by item."""
    failed = {a.invariant for a in result.anomalies}

    def item(text: str, invariant: str, detail: str) -> ChecklistItem:
        ok = None if invariant not in result.checked else invariant not in failed
        return ChecklistItem(item=text, ok=ok, detail=detail)

    valid = [e for e in ledger or [] if e.valid]
    first_200 = sum(1 for e in valid if e.first_status == 200)
    statuses = Counter(a.status for a in history.audit)
    orders = {e.order_id for e in valid} or {r.order_id for r in history.orders}
    items = [
        ChecklistItem(
            item=f"{len(valid)} x HTTP 200",
            ok=first_200 == len(valid) if ledger is not None else None,
            detail=f"{first_200}/{len(valid)} answered 200 at the first attempt",
        ),
        item("exactly one row per order", "I1", f"{len(history.orders)} rows for {len(orders)} orders"),
        item("no NULLs", "I1", f"{sum(1 for r in history.orders if r.null_columns)} rows with NULL columns"),
        item(
            "final status/fee = the webhook with the greatest updated_at",
            "I2",
            f"{result.counts.stale_overwrites} stale overwrites",
        ),
        item(
            "version = number of webhooks applied",
            "I4",
            f"versions {sum(r.version or 0 for r in history.orders)}, processed {statuses['processed']}",
        ),
        ChecklistItem(
            item="audit_log: a row per webhook, processed and discarded, no failed",
            ok=statuses["failed"] == 0 and "I3" not in failed and "I5" not in failed,
            detail=f"{len(history.audit)} rows: {statuses['processed']} processed, "
            f"{statuses['discarded']} discarded, {statuses['failed']} failed",
        ),
        item(
            "WebSocket clients saw every applied version",
            "I6",
            "not checked: see the notes"
            if "I6" not in result.checked
            else "gaps or stale versions: see the I6 anomalies"
            if "I6" in failed
            else "every applied version reached a client, in order",
        ),
        _gap_item(result, "catch-up", "caught up before the deadline", "store and clients caught up"),
        _gap_item(result, "coverage", "every fault hit webhooks in flight", "each fault window overlapped requests"),
    ]
    if orders_api is not None:
        items.append(ChecklistItem(item="GET /orders returns the order", ok=orders_api[0], detail=orders_api[1]))
    return items


def _gap_item(result: Result, check: str, text: str, fine: str) -> ChecklistItem:
    gaps = [a.message for a in result.inconclusive if a.invariant == check]
    return ChecklistItem(item=text, ok=not gaps, detail="; ".join(gaps) or fine)


def summary_json(report: ReportSummary, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """The operator's summary, trimmed (samples first, then messages) to fit a termination message."""
    summary = ReportSummary.model_validate(report.model_dump())
    text = summary.model_dump_json()
    for keep in (3, 1, 0):
        if len(text.encode()) <= limit:
            break
        for anomaly in [*summary.anomalies, *summary.inconclusive]:
            anomaly.samples = anomaly.samples[:keep]
            anomaly.message = anomaly.message[:200]
        for fault in summary.faults:
            fault.message = (fault.message or "")[:80] or None
        text = summary.model_dump_json()
    return text


ALARMING = ("lost", "unexpected", "unknown")


def render_counterexample(example: Counterexample, console: Console) -> None:
    console.print(f"\n[bold red]counterexample[/] {example.invariant}: {example.message}")
    for order in example.orders[:3]:  # the terminal shows three; the report all of them
        row = order.row
        console.print(
            f"  order [bold]{order.order_id}[/]: expected {order.expected_webhook}; stored "
            + (f"{row.last_webhook_id} {row.status} fee {row.shipping_fee} v{row.version}" if row else "no row")
            + f"; versions seen {order.versions_seen[:20]}"
        )
        table = Table(
            "webhook", "kind", "updated_at", "answer", "ms", "outcome", "faults active", box=None, padding=(0, 1)
        )
        for w in order.sent:
            table.add_row(
                w.webhook_id,
                w.kind,
                w.updated_at,
                str(w.status),
                f"{w.latency_ms:.0f}",
                w.outcome or "-",
                ", ".join(w.faults),
            )
        console.print(table)
        console.print(f"  audit: {'; '.join(order.audit) or 'none'}")
    if len(example.orders) > 3:
        console.print(f"  ... {len(example.orders) - 3} more orders in the report")


def render(report: Report, console: Console) -> None:
    colour = {"Pass": "green", "Fail": "red", "Inconclusive": "yellow", "Error": "red"}[report.verdict]
    console.print(
        f"\n[bold]{report.name}[/]: [bold {colour}]{report.verdict}[/]"
        + (f" ({report.reason})" if report.reason else "")
    )
    counts = Table(title="Counts", show_header=False)
    for key, value in report.counts.model_dump().items():
        counts.add_row(key.replace("_", " "), str(value))
    console.print(counts)
    if report.anomalies:
        table = Table("invariant", "count", "what", "samples", title="Anomalies")
        for a in report.anomalies:
            table.add_row(a.invariant, str(a.count), a.message, ", ".join(a.samples))
        console.print(table)
    if report.outcomes:
        table = Table(*report.outcomes, title="Webhook outcomes")
        table.add_row(*(f"[bold red]{n}[/]" if n and k in ALARMING else str(n) for k, n in report.outcomes.items()))
        console.print(table)
        if report.lost_positions:
            console.print(
                "lost, by position among the acknowledged webhooks of their order: "
                + ", ".join(f"{k} {v}" for k, v in sorted(report.lost_positions.items()))
            )
    if report.inconclusive:
        table = Table("check", "why the run proves less", title="Inconclusive", style="yellow")
        for a in report.inconclusive:
            table.add_row(a.invariant, a.message)
        console.print(table)
    for example in report.counterexamples:
        render_counterexample(example, console)
    if report.faults:
        table = Table("fault", "type", "result", "held s", "in flight", "detail", title="Faults")
        for f in report.faults:
            held = f"{f.healed_at - f.started_at:.1f}" if f.healed_at and f.started_at else "-"
            table.add_row(f.name, f.type, f.result, held, str(report.in_flight.get(f.name, "-")), f.message or "")
        console.print(table)
    if report.fault_windows:
        table = Table("fault", "requests failed", "retried", "answered", title="Fault windows")
        for w in report.fault_windows:
            table.add_row(w.name, str(w.failed), str(w.retried), str(w.answered))
        console.print(table)
    table = Table("check", "result", "detail", title="Seed guide checklist")
    for c in report.checklist:
        table.add_row(c.item, {True: "[green]ok[/]", False: "[red]FAIL[/]", None: "-"}[c.ok], c.detail)
    console.print(table)
    t = report.timings
    table = Table("metric", "value", "rating", "Expected", "Good", "Excellent", title="Performance")
    for r in report.performance:
        value = f"{r.value_s:.2f} s" if r.value_s is not None else "-"
        table.add_row(r.metric, value, r.rating, f"{r.expected_s:g} s", f"{r.good_s:g} s", f"{r.excellent_s:g} s")
    if t.throughput_rps is not None:
        table.add_row("throughput", f"{t.throughput_rps:.0f} webhooks/s", "", "", "", "")
    for label, p in (("ack latency", t.ack_latency_ms), ("webhook -> WebSocket", t.webhook_to_websocket_ms)):
        if p.p50 is not None:
            table.add_row(label, f"p50 {p.p50:.1f} / p95 {p.p95:.1f} / p99 {p.p99:.1f} ms", "", "", "", "")
    console.print(table)
    for note in report.notes:
        console.print(f"[dim]note: {note}[/]")
