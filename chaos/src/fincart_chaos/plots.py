"""The report's plots, drawn with matplotlib as inline SVG (text kept as text, so the fault labels can be
read and searched in the page): acknowledged throughput and ack latency over time, and every webhook's
outcome over time, each with the fault windows shaded and labelled."""

from __future__ import annotations

import io
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fincart_chaos.report import Report, percentiles

plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
FAULT_COLOURS = ("#f4a259", "#8cb369", "#5b8e7d", "#bc4b51", "#7b6d8d", "#f4e285")
OUTCOME_STYLE = {  # outcome: (row on the plot, colour, marker size); lost and unknown stand out
    "stored": (0, "#2a9d8f", 4),
    "recovered": (1, "#457b9d", 10),
    "rejected": (2, "#8d99ae", 6),
    "unknown": (3, "#ff9f1c", 22),
    "lost": (4, "#d62828", 30),
    "unexpected": (5, "#9d0208", 30),
}


def _start(report: Report) -> float:
    times = [p.sent_at for p in report.timeline] + [f.started_at for f in report.faults if f.started_at]
    return min(times, default=0.0)


def _shade_faults(ax: Axes, report: Report, t0: float, label: bool) -> None:
    for n, fault in enumerate(f for f in report.faults if f.started_at is not None):
        start = fault.started_at - t0  # type: ignore[operator]
        end = (fault.healed_at or fault.started_at) - t0  # type: ignore[operator]
        colour = FAULT_COLOURS[n % len(FAULT_COLOURS)]
        ax.axvspan(start, max(end, start + 0.05), color=colour, alpha=0.3, lw=0)
        if label:
            ax.text(
                start,
                1.0 - 0.09 * (n % 4),
                f" {fault.name} ({fault.type})",
                transform=ax.get_xaxis_transform(),
                fontsize=8,
                va="top",
                color="#333333",
                gid=f"fault-label-{fault.name}",
            )


def _svg(figure: Figure) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight", dpi=110, metadata={"Date": None})
    plt.close(figure)
    text = out.getvalue()
    return text[text.index("<svg") :]  # inline: without the XML declaration and DOCTYPE


def throughput_and_latency(report: Report, bucket_s: float = 1.0) -> str:
    """Acknowledged webhooks per second, and ack latency p50/p99 per second, over the run."""
    t0 = _start(report)
    acked: dict[int, int] = defaultdict(int)
    latencies: dict[int, list[float]] = defaultdict(list)
    for point in report.timeline:
        if point.acked:
            slot = int((point.done_at - t0) / bucket_s)
            acked[slot] += 1
            latencies[slot].append(point.latency_ms)
    slots = range(max([*acked, 0]) + 1)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True)
    xs = [s * bucket_s for s in slots]
    top.step(xs, [acked.get(s, 0) / bucket_s for s in slots], where="post", color="#264653", label="acked/s")
    top.set_ylabel("acknowledged / s")
    top.set_title("Acknowledged throughput and ack latency (fault windows shaded)")
    cuts = [percentiles(latencies[s]) if latencies.get(s) else None for s in slots]
    bottom.plot(xs, [c.p50 if c else None for c in cuts], color="#2a9d8f", label="p50")
    bottom.plot(xs, [c.p99 if c else None for c in cuts], color="#e76f51", label="p99")
    bottom.set_ylabel("ack latency ms")
    bottom.set_xlabel("seconds since the first request")
    bottom.legend(loc="upper right")
    _shade_faults(top, report, t0, label=True)
    _shade_faults(bottom, report, t0, label=False)
    return _svg(figure)


def outcomes_over_time(report: Report) -> str:
    """Each webhook as a dot at the time of its deciding answer, one row per outcome class."""
    t0 = _start(report)
    figure, ax = plt.subplots(figsize=(10, 3.2))
    for outcome, (row, colour, size) in OUTCOME_STYLE.items():
        xs = [p.done_at - t0 for p in report.timeline if p.outcome == outcome]
        ax.scatter(
            xs,
            [row] * len(xs),
            s=size,
            color=colour,
            label=f"{outcome} ({len(xs)})",
            edgecolors="black" if outcome in ("lost", "unknown", "unexpected") else "none",
            linewidths=0.5,
            rasterized=outcome == "stored",
        )  # thousands of dots: one embedded image, not SVG elements
    ax.set_yticks([row for row, _, _ in OUTCOME_STYLE.values()], list(OUTCOME_STYLE))
    ax.set_ylim(-0.7, len(OUTCOME_STYLE) - 0.3)
    ax.set_xlabel("seconds since the first request (time of the deciding answer)")
    ax.set_title("Every webhook's outcome over time")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    _shade_faults(ax, report, t0, label=True)
    return _svg(figure)
