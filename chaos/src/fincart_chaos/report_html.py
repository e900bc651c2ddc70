"""The evidence bundle's page: one self-contained HTML file (inline CSS and SVG, no script, no network)
with the verdict, the checks, the checklist, the counts and outcome classes, the counterexamples, the
faults and the plots."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from fincart_chaos.evidence import Counterexample
from fincart_chaos.plots import outcomes_over_time, throughput_and_latency
from fincart_chaos.report import Report

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.verdict { display: inline-block; padding: 0.2em 0.7em; border-radius: 4px; color: white; font-weight: bold; }
.Pass { background: #2a9d8f; } .Fail, .Error { background: #d62828; } .Inconclusive { background: #e9a23b; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.fail, .lost, .unexpected { color: #d62828; font-weight: bold; }
.inconclusive, .unknown { color: #c77d00; font-weight: bold; }
.pass, .ok { color: #2a9d8f; } .skipped { color: #888; }
.plot svg { max-width: 100%; height: auto; }
code { font-size: 0.9em; }
"""
MARK = {True: ("ok", "ok"), False: ("fail", "FAIL"), None: ("skipped", "-")}


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table of already escaped cells."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + f"</tr>{body}</table>"


def _counterexample(example: Counterexample) -> str:
    parts = [f"<h3>{escape(example.invariant)}: {escape(example.message)}</h3>"]
    for order in example.orders:
        row = order.row
        stored = (
            (
                f"{escape(str(row.last_webhook_id))}, {escape(str(row.status))}, fee {escape(str(row.shipping_fee))}"
                f", version {row.version}"
            )
            if row
            else "no row"
        )
        parts.append(
            f"<p><b>order <code>{escape(order.order_id)}</code></b>: expected "
            f"<code>{escape(str(order.expected_webhook))}</code>; stored {stored}; versions seen by "
            f"clients {escape(str(order.versions_seen))}</p>"
        )
        parts.append(
            _table(
                ("webhook", "kind", "updated_at", "answer", "latency ms", "outcome", "faults active"),
                (
                    (
                        f"<code>{escape(w.webhook_id)}</code>",
                        escape(w.kind),
                        escape(w.updated_at),
                        str(w.status),
                        f"{w.latency_ms:.1f}",
                        f"<span class='{escape(w.outcome or '')}'>{escape(w.outcome or '-')}</span>",
                        escape(", ".join(w.faults)),
                    )
                    for w in order.sent
                ),
            )
        )
        parts.append(f"<p>audit rows: {escape('; '.join(order.audit)) or 'none'}</p>")
    return "".join(parts)


def section(report: Report) -> str:
    out = [
        f"<section id='{escape(report.name)}'><h1>{escape(report.name)} "
        f"<span class='verdict {report.verdict}'>{report.verdict}</span></h1>"
    ]
    if report.reason:
        out.append(f"<p>{escape(report.reason)}</p>")
    out.append(
        "<h2>Counts</h2>"
        + _table(list(report.counts.model_dump()), [[str(v) for v in report.counts.model_dump().values()]])
    )
    if report.outcomes:
        out.append(
            "<h2>Webhook outcomes</h2>"
            + _table(
                list(report.outcomes),
                [[f"<span class='{k}'>{v}</span>" if v else "0" for k, v in report.outcomes.items()]],
            )
        )
        if report.lost_positions:
            out.append(
                "<p>lost, by position among the acknowledged webhooks of their order: "
                + escape(", ".join(f"{k} {v}" for k, v in sorted(report.lost_positions.items())))
                + "</p>"
            )
    if report.timeline:
        out.append(
            "<h2>Plots</h2>"
            f"<div class='plot' id='plot-throughput'>{throughput_and_latency(report)}</div>"
            f"<div class='plot' id='plot-outcomes'>{outcomes_over_time(report)}</div>"
        )
    if report.inconclusive:
        out.append(
            "<h2>Why the run proves less than it claims</h2>"
            + _table(
                ("check", "finding"),
                (
                    (escape(a.invariant), f"<span class='inconclusive'>{escape(a.message)}</span>")
                    for a in report.inconclusive
                ),
            )
        )
    if report.anomalies:
        out.append(
            "<h2>Violations</h2>"
            + _table(
                ("invariant", "count", "what", "samples"),
                (
                    (escape(a.invariant), str(a.count), escape(a.message), escape(", ".join(a.samples)))
                    for a in report.anomalies
                ),
            )
        )
    if report.counterexamples:
        out.append("<h2>Counterexamples</h2>" + "".join(_counterexample(e) for e in report.counterexamples))
    # each section is one _table() over its own columns: the rows alike in shape are the report's data
    out.append(
        "<h2>Checks</h2>"
        + _table(
            ("check", "what", "result", "found"),
            (
                (
                    escape(c.name),
                    escape(c.title),
                    f"<span class='{c.result}'>{c.result}</span>",
                    escape("; ".join(c.messages)),
                )
                for c in report.checks
            ),
        )
    )
    out.append(
        "<h2>Checklist</h2>"
        + _table(
            ("item", "result", "detail"),
            (
                (escape(c.item), f"<span class='{MARK[c.ok][0]}'>{MARK[c.ok][1]}</span>", escape(c.detail))
                for c in report.checklist
            ),
        )
    )
    if report.faults:
        out.append(
            "<h2>Faults</h2>"
            + _table(
                ("fault", "type", "result", "held s", "requests in flight", "detail"),
                (
                    (
                        escape(f.name),
                        escape(f.type),
                        escape(f.result),
                        f"{f.healed_at - f.started_at:.1f}" if f.healed_at and f.started_at else "-",
                        str(report.in_flight.get(f.name, "-")),
                        escape(f.message or ""),
                    )
                    for f in report.faults
                ),
            )
        )
    if report.performance:
        out.append(
            "<h2>Performance</h2>"
            + _table(
                ("metric", "value", "rating", "Expected", "Good", "Excellent"),
                (
                    (
                        escape(r.metric),
                        f"{r.value_s:.2f} s" if r.value_s is not None else "-",
                        escape(r.rating),
                        f"{r.expected_s:g} s",
                        f"{r.good_s:g} s",
                        f"{r.excellent_s:g} s",
                    )
                    for r in report.performance
                ),
            )
        )
    if report.notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in report.notes) + "</ul>")
    return "".join(out) + "</section>"


def render_html(reports: Sequence[Report], title: str = "FinCart chaos report") -> str:
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(section(r) for r in reports)}</body></html>\n"
    )
