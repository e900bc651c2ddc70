"""FinCart / Chaos tests: the operator's chaostest_* metrics, with every fault window as an annotation, next to
the pipeline series a fault should move (backlog, 5xx)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as model

from fincart_dashboards.panels import (
    Annotation,
    PrometheusAnnotation,
    datasource_variable,
    graph,
    numbered,
    single_stat,
    thresholds,
)

UID = "fincart-chaos"
# Faults of each type injected and not yet healed (or failed): the operator counts both ends of every fault,
# each (type, result) from 0, so the difference is the number of faults active right now.
FAULTS_ACTIVE = (
    'sum by (type) (chaostest_fault_injections_total{result="injected"}) - '
    'sum by (type) (chaostest_fault_injections_total{result=~"healed|failed"}) > 0'
)


def build() -> model.Dashboard:
    board = (
        dashboard.Dashboard("FinCart / Chaos tests")
        .uid(UID)
        .tags(["fincart", "chaos"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .description("ChaosTest verdicts, faults and invariant violations from the FinCart chaos operator")
        .with_variable(datasource_variable())
        .annotation(
            Annotation(
                PrometheusAnnotation(
                    "Fault windows", FAULTS_ACTIVE, title_format="{{type}}", tag_keys="type", icon_color="red"
                )
            )
        )
        .with_panel(
            single_stat(
                "Runs by verdict",
                "Chaos tests finished in the time range",
                "short",
                "sum by (verdict) (increase(chaostest_runs_total[$__range]))",
                "{{verdict}}",
                width=18,
            )
        )
        .with_panel(
            single_stat("Active chaos tests", "Tests the operator is running now", "short", "sum(chaostest_active)")
        )
        .with_panel(
            graph(
                "Verdict history",
                "Chaos tests finished per interval, by verdict (fault windows are annotations)",
                "short",
                ("sum by (verdict) (increase(chaostest_runs_total[$__interval]))", "{{verdict}}"),
                width=24,
                bars=True,
                stacked=True,
            )
        )
        .with_panel(
            graph("Faults active", "Faults injected and not yet healed, by type", "short", (FAULTS_ACTIVE, "{{type}}"))
        )
        .with_panel(
            graph(
                "Fault injections",
                "Fault outcomes per 5 minutes (failed: FinCartChaosFaultFailed)",
                "short",
                ("sum by (type, result) (increase(chaostest_fault_injections_total[5m]))", "{{type}} {{result}}"),
            )
        )
        .with_panel(
            graph(
                "Invariant violations",
                "Anomalies the verifier found per 5 minutes, by invariant",
                "short",
                ("sum by (invariant) (increase(chaostest_invariant_violations_total[5m]))", "{{invariant}}"),
            ).thresholds(thresholds((None, "green"), (1, "red")))
        )
        .with_panel(
            graph(
                "Run duration",
                "Start to finish of a chaos test",
                "s",
                ("histogram_quantile(0.5, sum by (le) (rate(chaostest_duration_seconds_bucket[1h])))", "p50"),
                ("histogram_quantile(0.99, sum by (le) (rate(chaostest_duration_seconds_bucket[1h])))", "p99"),
            )
        )
        .with_panel(
            graph(
                "Webhooks sent by chaos tests",
                "Counted when a test is verified",
                "ops",
                ("sum(rate(chaostest_webhooks_sent_total[5m]))", "webhooks/s"),
            )
        )
        .with_panel(
            graph(
                "Pipeline under faults",
                "What a fault should move: the backlog, and webhooks in against applied",
                "short",
                ("sum(fincart_processor_consumer_lag)", "backlog"),
                ("sum(fincart:ingest_requests:rate1m)", "in/s"),
                ('sum(fincart:processor_webhooks:rate1m{result="processed"})', "applied/s"),
            )
        )
    ).build()
    return numbered(board)
