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

from fincart_chaos.history_checks import FaultWindow
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.verify import History, Result

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


class Report(ReportSummary):
    name: str
    checked: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    checklist: list[ChecklistItem] = Field(default_factory=list)
    performance: list[Rating] = Field(default_factory=list)
    # per fault: the requests it failed, retried and answered (a request-path fault must fail some)
    fault_windows: list[FaultWindow] = Field(default_factory=list)


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
        label = next((name for name, bound in (("Excellent", excellent), ("Good", good), ("Expected", expected))
                      if value <= bound), "Below expected")
    return Rating(metric=metric, value_s=value, rating=label, expected_s=expected, good_s=good,
                  excellent_s=excellent)


def checklist(result: Result, history: History, ledger: Sequence[LedgerEntry] | None,
              orders_api: tuple[bool, str] | None) -> list[ChecklistItem]:
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
        ChecklistItem(item=f"{len(valid)} x HTTP 200", ok=first_200 == len(valid) if ledger is not None else None,
                      detail=f"{first_200}/{len(valid)} answered 200 at the first attempt"),
        item("exactly one row per order", "I1", f"{len(history.orders)} rows for {len(orders)} orders"),
        item("no NULLs", "I1", f"{sum(1 for r in history.orders if r.null_columns)} rows with NULL columns"),
        item("final status/fee = the webhook with the greatest updated_at", "I2",
             f"{result.counts.stale_overwrites} stale overwrites"),
        item("version = number of webhooks applied", "I4",
             f"versions {sum(r.version or 0 for r in history.orders)}, processed {statuses['processed']}"),
        ChecklistItem(
            item="audit_log: a row per webhook, processed and discarded, no failed",
            ok=statuses["failed"] == 0 and "I3" not in failed and "I5" not in failed,
            detail=f"{len(history.audit)} rows: {statuses['processed']} processed, "
                   f"{statuses['discarded']} discarded, {statuses['failed']} failed",
        ),
        item("WebSocket clients saw every applied version", "I6",
             "no sync service to observe" if "I6" not in result.checked
             else "gaps or stale versions: see the I6 anomalies" if "I6" in failed
             else "every applied version reached a client, in order"),
    ]
    if orders_api is not None:
        items.append(ChecklistItem(item="GET /orders returns the order", ok=orders_api[0], detail=orders_api[1]))
    return items


def summary_json(report: ReportSummary, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """The operator's summary, trimmed (samples first, then messages) to fit a termination message."""
    summary = ReportSummary.model_validate(report.model_dump())
    text = summary.model_dump_json()
    for keep in (3, 1, 0):
        if len(text.encode()) <= limit:
            break
        for anomaly in summary.anomalies:
            anomaly.samples = anomaly.samples[:keep]
        for fault in summary.faults:
            fault.message = (fault.message or "")[:80] or None
        text = summary.model_dump_json()
    return text


def render(report: Report, console: Console) -> None:
    colour = {"Pass": "green", "Fail": "red", "Inconclusive": "yellow", "Error": "red"}[report.verdict]
    console.print(f"\n[bold]{report.name}[/]: [bold {colour}]{report.verdict}[/]"
                  + (f" ({report.reason})" if report.reason else ""))
    counts = Table(title="Counts", show_header=False)
    for key, value in report.counts.model_dump().items():
        counts.add_row(key.replace("_", " "), str(value))
    console.print(counts)
    if report.anomalies:
        table = Table("invariant", "count", "what", "samples", title="Anomalies")
        for a in report.anomalies:
            table.add_row(a.invariant, str(a.count), a.message, ", ".join(a.samples))
        console.print(table)
    if report.faults:
        table = Table("fault", "type", "result", "held s", "detail", title="Faults")
        for f in report.faults:
            held = f"{f.healed_at - f.started_at:.1f}" if f.healed_at and f.started_at else "-"
            table.add_row(f.name, f.type, f.result, held, f.message or "")
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
