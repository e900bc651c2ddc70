"""Ratings against the seed guide's table, and the status summary that must fit a termination message."""

from __future__ import annotations

from fincart_chaos.report import Report, rate, summary_json
from fincart_core.contracts.report import Anomaly, FaultRecord, ReportSummary


def test_ratings_follow_the_guide_thresholds():
    assert [rate("total time", v).rating for v in (1.0, 2.0, 4.9, 9.0, 11.0, None)] == [
        "Excellent", "Excellent", "Good", "Expected", "Below expected", "n/a"]
    assert rate("queue drain time", 14.0).rating == "Good"


def test_the_summary_fits_4_kib_and_keeps_the_verdict():
    big = Report(
        name="t", verdict="Fail", reason="violated I5",
        anomalies=[Anomaly(invariant=f"I{i}", message="m" * 200, count=10**6, samples=["x" * 60] * 10)
                   for i in range(1, 8)],
        faults=[FaultRecord(name=f"f{i}", type="podKill", message="y" * 500) for i in range(5)],
    )
    text = summary_json(big)
    assert len(text.encode()) <= 4096
    summary = ReportSummary.model_validate_json(text)
    assert summary.verdict == "Fail" and [a.count for a in summary.anomalies] == [10**6] * 7
    small = Report(name="t", verdict="Pass")
    assert ReportSummary.model_validate_json(summary_json(small)).verdict == "Pass"
