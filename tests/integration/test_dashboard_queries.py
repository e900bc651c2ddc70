"""Every dashboard panel answers, asked of a real Prometheus (Debian's ``prometheus``) that scraped a local stack
during a short chaos run with a fault.

The stack is started as ``fincart-chaos run --local`` starts it (fincart_chaos.local.services) and the ChaosTest
runs through the same ``run_test``; Prometheus (free loopback port, 1 s scrapes) scrapes ingest, both processors
and sync, and evaluates the chart's rendered rules (recording rules included). The chaos metrics come from the
operator's own metrics module and HTTP endpoint, fed by this run's real fault starts and ends and its verdict as
the operator records them. Then each panel's queries, with the dashboard variables substituted, go through the
HTTP API: a time series panel must get a matrix, a stat or table an instant vector, each with at least one series
and a finite value. The table of queries and series counts is written to test-output/."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fincart_chaos.execution import run_test
from fincart_chaos.faults import LocalTargets
from fincart_chaos.local import services
from fincart_chaos.spec_io import parse_documents
from fincart_core.contracts.chaostest import ChaosTestStatus, StatusCounts, StatusFault
from fincart_core.contracts.report import FaultRecord
from fincart_dashboards import cli as dashboards
from fincart_devstack.localstack import Infra, ManagedProcess, StackError, free_port, http_ready, wait_for
from fincart_operator import metrics as operator_metrics
from fincart_operator.reconcile import timestamp
from rich.console import Console

from tests.integration.test_deploy_chart import helm  # noqa: F401  (a fixture)
from tests.integration.test_monitoring_rules import rendered_rule_groups, write_rules

SCRAPE_S = 1
READY_TIMEOUT_S = 60.0
QUERY_TIMEOUT_S = 30.0
AFTER_RUN_TIMEOUT_S = 60.0
CHAOS_TEST = """
apiVersion: chaos.fincart.io/v1alpha1
kind: ChaosTest
metadata: {name: dashboards}
spec:
  target: {ingestUrl: http://unused:8080}
  load: {orders: 40, updatesPerOrder: 6, concurrency: 8, rate: 60, duplicateRatio: 0.05, seed: 16}
  faults:
    - name: kill-processor
      type: podKill
      selector: {app.kubernetes.io/component: processor, statefulset.kubernetes.io/pod-name: fincart-processor-0}
      startAfter: 1s
      duration: 4s
  settle: {timeout: 120s}
"""


# ---------------------------------------------------------------- Prometheus


def scrape_config(targets: LocalTargets, operator_port: int, rules: Path) -> dict[str, Any]:
    """One job per component; each process is a target with the pod label a ServiceMonitor would add."""
    jobs: dict[str, list[tuple[str, int]]] = {
        f"fincart-{component}": [(process.name, process.port) for process in processes]  # type: ignore[attr-defined]
        for component, processes in targets.services.items()
    }
    jobs["fincart-operator"] = [("operator", operator_port)]
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_S}s",
            "scrape_timeout": f"{SCRAPE_S}s",
            "evaluation_interval": f"{SCRAPE_S}s",
        },
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"pod": pod}} for pod, port in pods],
            }
            for job, pods in jobs.items()
        ],
    }


@dataclass
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=QUERY_TIMEOUT_S) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("prometheus is not on PATH: `apt-get install prometheus` (.ci/run installs it)")
    return found


@pytest.fixture
def chaos_stack(infra: Infra, tmp_path: Path) -> Iterator[tuple[Any, LocalTargets]]:
    """ingest, two processors and sync on their own database and streams, as `fincart-chaos run --local` starts them."""
    with services(infra, processors=2, logdir=tmp_path / "logs") as (endpoints, targets):
        yield endpoints, targets


def start_prometheus(binary: str, config: dict[str, Any], folder: Path) -> tuple[ManagedProcess, Prometheus]:
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    process = ManagedProcess(
        "prometheus",
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        log_path=folder / "prometheus.log",
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: not process.running or http_ready(f"{url}/-/ready"), READY_TIMEOUT_S, "prometheus")
    except StackError:
        process.stop()
        raise
    assert process.running, process.log_tail()
    return process, Prometheus(url)


# ---------------------------------------------------------------- the chaos run, as the operator counts it


class OperatorStatus:
    """The ChaosTest status the operator would write, fed to its metrics module as the run goes."""

    KEY = "fincart/dashboards"

    def __init__(self) -> None:
        self.status = ChaosTestStatus(phase="Running", start_time=timestamp(datetime.now(UTC)))
        operator_metrics.track(self.KEY, self.status)

    def change(self, **update: Any) -> None:
        new = self.status.model_copy(update=update)
        operator_metrics.record(self.status, new)
        operator_metrics.track(self.KEY, new)
        self.status = new

    def fault(self, record: FaultRecord) -> None:
        entry = StatusFault(name=record.name, type=record.type, result=record.result)
        self.change(faults=[*(f for f in self.status.faults if f.name != record.name), entry])


# ---------------------------------------------------------------- the panels


@dataclass
class Row:
    dashboard: str
    panel: str
    ref: str
    kind: str
    expr: str
    series: int


def variable_values(prom: Prometheus, board: dict[str, Any], start: float, end: float) -> dict[str, str]:
    """Each query variable ``label_values(metric, label)`` as Grafana would fill it with every value selected."""
    values = {}
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = variable["query"].removeprefix("label_values(").removesuffix(")").split(", ")
        found = prom.get(f"/api/v1/label/{label}/values", **{"match[]": metric, "start": str(start), "end": str(end)})
        assert found, f"{board['title']}: variable {variable['name']} has no values ({variable['query']})"
        values[variable["name"]] = "|".join(found)
    return values


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def finite_values(result: list[dict[str, Any]], kind: str) -> int:
    if kind == "vector":
        return sum(math.isfinite(float(s["value"][1])) for s in result)
    return sum(math.isfinite(float(v)) for s in result for _, v in s["values"])


def evaluate(prom: Prometheus, start: float, end: float) -> list[Row]:
    rows = []
    builtins = {"__range": f"{math.ceil(end - start)}s", "__interval": "5s", "__rate_interval": "1m"}
    for name, text in dashboards.rendered().items():
        board = json.loads(text)
        variables = {**builtins, **variable_values(prom, board, start, end)}
        for panel in board["panels"]:
            expected = "vector" if panel["type"] in ("stat", "table") else "matrix"
            for target in panel["targets"]:
                expr = substitute(target["expr"], variables)
                assert target["instant"] is (expected == "vector"), f"{panel['title']}: query kind vs panel type"
                data = (
                    prom.get("/api/v1/query", query=expr, time=str(end))
                    if expected == "vector"
                    else prom.get(
                        "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=f"{SCRAPE_S}s"
                    )
                )
                assert data["resultType"] == expected, f"{panel['title']} {target['refId']}: {data['resultType']}"
                result = data["result"]
                assert result, f"{name} / {panel['title']} {target['refId']}: no series for {expr}"
                assert finite_values(result, expected), f"{name} / {panel['title']}: only NaN for {expr}"
                rows.append(Row(name, panel["title"], target["refId"], expected, expr, len(result)))
    return rows


def write_table(rows: list[Row], path: Path) -> None:
    lines = ["| dashboard | panel | ref | type | series | query |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.dashboard} | {r.panel} | {r.ref} | {r.kind} | {r.series} | `{r.expr}` |" for r in rows]
    path.write_text("\n".join(lines) + "\n")


async def test_every_dashboard_panel_answers_after_a_chaos_run(  # type: ignore[no-untyped-def]
    chaos_stack,
    helm: str,  # noqa: F811 (the fixture imported above)
    prometheus_binary: str,
    tmp_path: Path,
    output_dir: Path,
) -> None:
    endpoints, targets = chaos_stack
    (test,) = parse_documents(CHAOS_TEST)
    runner, operator_port = await operator_metrics.serve("127.0.0.1", 0)
    rules = write_rules(rendered_rule_groups(helm), tmp_path)
    config = scrape_config(targets, operator_port, rules)
    process, prom = await asyncio.to_thread(start_prometheus, prometheus_binary, config, tmp_path)
    try:
        start = time.time()
        # every target scraped once before the load starts: the first samples are the zeros rate() counts from
        targets_up = sum(len(job["static_configs"]) for job in config["scrape_configs"])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(prom.get("/api/v1/query", query="up == 1")["result"]) < targets_up:
            assert time.monotonic() < deadline, "Prometheus did not scrape every target"
            await asyncio.sleep(SCRAPE_S / 2)
        status = OperatorStatus()
        report = await run_test(
            test, endpoints, targets, console=Console(quiet=True), show_progress=False, watch_faults=status.fault
        )
        assert report.verdict == "Pass", report.model_dump_json(indent=2)
        status.change(
            phase="Completed",
            verdict=report.verdict,
            completion_time=timestamp(datetime.now(UTC)),
            counts=StatusCounts(sent=report.counts.sent, acked=report.counts.acked, stored=report.counts.stored),
        )
        # the run's end is in Prometheus once a scrape after it has been evaluated by the recording rules
        deadline = time.monotonic() + AFTER_RUN_TIMEOUT_S
        while not prom.get("/api/v1/query", query='sum(chaostest_runs_total{verdict="Pass"}) > 0')["result"]:
            assert time.monotonic() < deadline, "Prometheus never scraped the finished run"
            await asyncio.sleep(SCRAPE_S)
        await asyncio.sleep(3 * SCRAPE_S)
        end = time.time()

        rows = await asyncio.to_thread(evaluate, prom, start, end)
        write_table(rows, output_dir / "panel_queries.md")
        assert len(rows) >= 30

        # every rule evaluates without error
        groups = prom.get("/api/v1/rules")["groups"]
        assert sum(len(g["rules"]) for g in groups) >= 20
        for rule in (r for g in groups for r in g["rules"]):
            assert rule["health"] == "ok", rule

        # the fault-window annotation marks the fault, where it happened
        (annotation,) = json.loads(dashboards.rendered()["chaos.json"])["annotations"]["list"]
        windows = prom.get(
            "/api/v1/query_range", query=annotation["expr"], start=str(start), end=str(end), step=f"{SCRAPE_S}s"
        )["result"]
        (fault,) = report.faults
        assert fault.result == "healed" and fault.started_at and fault.healed_at
        assert [w["metric"] for w in windows] == [{"type": "podKill"}]
        marked = [float(t) for t, v in windows[0]["values"] if float(v) > 0]
        slack = 3 * SCRAPE_S + 2  # a scrape interval, a rule evaluation, and a loaded machine
        assert marked and fault.started_at - slack <= min(marked) and max(marked) <= fault.healed_at + slack, (
            marked,
            fault,
        )
    finally:
        process.stop()
        await runner.cleanup()
