"""Ratings against the seed guide's table, the status summary that must fit a termination message, and the
evidence bundle: the HTML page and the JUnit XML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from fincart_chaos.bundle import RunReport, write_bundle
from fincart_chaos.report import CheckResult, Report, rate, render, summary_json
from fincart_chaos.report_junit import junit_xml
from fincart_core.contracts.report import Anomaly, FaultRecord, ReportSummary
from rich.console import Console

from tests.support.chaos_histories import failing_run


def test_ratings_follow_the_guide_thresholds():
    assert [rate("total time", v).rating for v in (1.0, 2.0, 4.9, 9.0, 11.0, None)] == [
        "Excellent",
        "Excellent",
        "Good",
        "Expected",
        "Below expected",
        "n/a",
    ]
    assert rate("queue drain time", 14.0).rating == "Good"


def test_the_summary_fits_4_kib_and_keeps_the_verdict():
    big = Report(
        name="t",
        verdict="Fail",
        reason="violated I5",
        anomalies=[
            Anomaly(invariant=f"I{i}", message="m" * 200, count=10**6, samples=["x" * 60] * 10) for i in range(1, 8)
        ],
        faults=[FaultRecord(name=f"f{i}", type="podKill", message="y" * 500) for i in range(5)],
    )
    text = summary_json(big)
    assert len(text.encode()) <= 4096
    summary = ReportSummary.model_validate_json(text)
    assert summary.verdict == "Fail" and [a.count for a in summary.anomalies] == [10**6] * 7
    small = Report(name="t", verdict="Pass")
    assert ReportSummary.model_validate_json(summary_json(small)).verdict == "Pass"


def test_the_bundle_holds_the_verdict_plots_fault_labels_and_counterexamples(tmp_path: Path):
    report, lost = failing_run()
    assert report.verdict == "Fail" and report.outcomes["lost"] == 1 and report.outcomes["unknown"] == 1
    paths = write_bundle(tmp_path, [report])
    assert [p.name for p in paths] == ["report.json", "report.html", "junit.xml"]
    page = (tmp_path / "report.html").read_text()
    # self-contained: no script, every src/href is inline data or an anchor in the page
    assert "<script" not in page and not re.search(r"""(?:src|href)=["'](?!data:|#)""", page)
    assert page.count("<svg") == 2 and "kill-processor (podKill)" in page
    assert "Counterexamples" in page and lost in page and "class='verdict Fail'" in page
    again = RunReport.model_validate_json((tmp_path / "report.json").read_text())
    assert again.verdict == "Fail" and again.reports[0].counterexamples == report.counterexamples


def test_junit_has_a_testcase_per_check_and_checklist_item(tmp_path: Path):
    report, _ = failing_run()
    suite = ET.fromstring(junit_xml([report])).find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert len(cases) == len(report.checks) + len(report.checklist)
    i5 = next(c for name, c in cases.items() if name and name.startswith("I5:"))
    failure = i5.find("failure")
    assert failure is not None and failure.get("type") == "violation"
    assert int(suite.get("failures") or 0) >= 2 and suite.get("tests") == str(len(cases))
    ok = next(c for name, c in cases.items() if name and name.startswith("I1:"))
    assert list(ok) == []  # passed


def test_an_inconclusive_check_is_no_green_testcase():
    report, _ = failing_run()
    report.checks = [CheckResult(name="I6", title="delivery", result="inconclusive", messages=["no observer"])]
    report.checklist = []
    case = ET.fromstring(junit_xml([report])).find("testsuite/testcase")
    assert case is not None and case.find("failure") is not None and case.find("failure").get("type") == "inconclusive"  # type: ignore[union-attr]


def test_the_terminal_shows_outcomes_and_a_readable_counterexample():
    report, lost = failing_run()
    console = Console(record=True, width=200)
    render(report, console)
    text = console.export_text()
    assert "Webhook outcomes" in text and "counterexample I5: acked webhooks never stored" in text
    assert lost in text and "kill-processor" in text and "lost, by position" in text
    assert report.in_flight["kill-processor"] > 0  # the requests its window overlapped, shown with the fault
