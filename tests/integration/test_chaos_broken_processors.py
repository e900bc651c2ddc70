"""A checker that cannot fail is worth nothing: the chaos engine's whole run (load over HTTP through
ingest, NATS JetStream, PostgreSQL, sync with the WebSocket observer, then the verifier) against the
real processor with one seam broken (tests/support/broken_processor.py) ends with Fail naming the
invariant that seam breaks, while the same harness with nothing broken passes the same workload.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from fincart_chaos.execution import run_test
from fincart_chaos.local import services
from fincart_chaos.report import Report
from fincart_chaos.spec_io import parse_documents
from fincart_chaos.workload import plan
from fincart_devstack.localstack import Infra
from rich.console import Console

BROKEN = Path(__file__).resolve().parents[1] / "support" / "broken_processor.py"
ORDERS = 10
# Every position shuffled: with seed 2 the newest update of 8 of the 10 orders is sent more than
# 2 x concurrency requests before another update of its order, so arrival order != updated_at order.
SPEC = """apiVersion: chaos.fincart.io/v1alpha1
kind: ChaosTest
metadata: {{name: {name}}}
spec:
  target: {{ingestUrl: http://127.0.0.1}}
  load: {{orders: 10, updatesPerOrder: 8, concurrency: 10, outOfOrderRatio: 1.0, seed: 2}}
  settle: {{timeout: 20s}}
"""
# The control settles in about a second; a run that cannot settle (acked webhooks never stored, versions
# never announced) waits out the 20 s, long enough for the rest of the pipeline to drain meanwhile, also when the
# processor that died restarts slowly on a loaded machine (at 8 s it sometimes had not, and whole orders were
# still missing: an I1 finding on top of I5).


@pytest.fixture(autouse=True)
def four_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINCART_PARTITIONS", "4")


def run_chaos(mode: str, infra: Infra, logdir: Path) -> Report:
    """What ``fincart-chaos run --local`` does for one ChaosTest, with the processor replaced."""
    test = parse_documents(SPEC.format(name=mode))[0]
    with services(infra, 1, logdir, processor_command=[sys.executable, str(BROKEN), mode]) as (endpoints, targets):
        return asyncio.run(run_test(test, endpoints, targets, console=Console(quiet=True), show_progress=False))


def by_invariant(report: Report) -> dict[str, dict[str, int]]:
    """invariant -> {anomaly message: count}"""
    found: dict[str, dict[str, int]] = {}
    for a in report.anomalies:
        found.setdefault(a.invariant, {})[a.message] = a.count
    return found


def test_the_workload_sends_newest_updates_before_older_ones():
    load = parse_documents(SPEC.format(name="x"))[0].spec.load
    requests = plan(load, 0)
    newest = load.updates_per_order - 1
    last_sent = {r.webhook.order_id: i for i, r in enumerate(requests)}
    newest_sent = {r.webhook.order_id: i for i, r in enumerate(requests) if r.webhook.index == newest}
    stale = [o for o in newest_sent if last_sent[o] - newest_sent[o] > 2 * load.concurrency]
    assert len(requests) == 80 and len(stale) >= ORDERS // 2


def test_the_control_passes(infra: Infra, tmp_path: Path):
    report = run_chaos("correct", infra, tmp_path)
    assert report.verdict == "Pass", (report.anomalies, report.notes)
    assert report.checked == ["I1", "I2", "I3", "I4", "I5", "I6", "I7"]
    counts = report.counts
    assert (counts.acked, counts.stored, counts.lost, counts.duplicated, counts.stale_overwrites) == (80, 80, 0, 0, 0)


def test_ignoring_the_timestamp_fails_i2(infra: Infra, tmp_path: Path):
    report = run_chaos("ignore-timestamp", infra, tmp_path)
    found = by_invariant(report)
    assert report.verdict == "Fail" and set(found) - {"I6"} == {"I2"}, (report.anomalies, report.notes)
    # the same bug: the events carry the arrival time as updated_at, not their webhook's
    assert set(found.get("I6", {})) <= {"events whose content differs from their webhook's"}, found
    wrong = found["I2"]["final state is not the newest webhook's (updated_at, id)"]
    # every wrong final state is an older webhook that arrived later
    assert wrong >= 1 and report.counts.stale_overwrites == wrong
    assert (report.counts.stored, report.counts.lost, report.counts.duplicated) == (80, 0, 0)


def test_acking_before_the_commit_and_crashing_fails_i5(infra: Infra, tmp_path: Path):
    report = run_chaos("ack-before-commit", infra, tmp_path)
    found = by_invariant(report)
    # I2 as well when a lost webhook was its order's newest: the row then holds an older one
    assert report.verdict == "Fail" and set(found) - {"I2"} == {"I5"}, (report.anomalies, report.notes)
    lost = found["I5"]["acked webhooks never stored (tolerated: 0)"]
    assert lost >= 1 and report.counts.lost == lost and report.counts.stored == 80 - lost
    assert report.counts.duplicated == 0 and not report.timings.settled


def test_applying_a_webhook_twice_fails_i4_and_i5(infra: Infra, tmp_path: Path):
    report = run_chaos("double-apply", infra, tmp_path)
    found = by_invariant(report)
    assert report.verdict == "Fail" and set(found) - {"I1", "I6"} == {"I4", "I5"}, (report.anomalies, report.notes)
    # the same bug: the doubled versions are not the ones audited, so the listed rows and the events carry
    # versions that no processed webhook committed (or that another webhook committed)
    assert set(found.get("I1", {})) <= {"GET /orders listed a state that was never committed"}, found
    assert set(found.get("I6", {})) <= {
        "events for a version that was never committed",
        "events whose webhook is not the one committed at that version",
    }, found
    assert found["I4"] == {"version differs from the count of processed webhooks": ORDERS}
    twice = found["I5"]["webhooks applied more than once (samples: webhook ids, else orders)"]
    assert twice >= ORDERS and report.counts.duplicated == twice
    assert (report.counts.stored, report.counts.lost) == (80, 0)


def test_skipping_change_events_fails_i6(infra: Infra, tmp_path: Path):
    report = run_chaos("skip-events", infra, tmp_path)
    found = by_invariant(report)
    assert report.verdict == "Fail" and set(found) == {"I6"}, (report.anomalies, report.notes)
    # exactly one event per order is missing: its first version
    assert found["I6"] == {"applied versions a client never received (gap)": ORDERS}
    gap = next(a for a in report.anomalies if a.invariant == "I6")
    assert all(sample.endswith("@v1") for sample in gap.samples)
    assert (report.counts.stored, report.counts.lost, report.counts.duplicated) == (80, 0, 0)
