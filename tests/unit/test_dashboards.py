"""The Grafana dashboards are code (deploy/dashboards, grafana-foundation-sdk): the chart's JSON files are exactly
what `fincart-dashboards` writes, and every panel is wired the way Grafana needs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fincart_dashboards import cli

ROOT = Path(__file__).resolve().parents[2]
CHART_DASHBOARDS = ROOT / cli.CHART_DASHBOARDS
GRAFANA_VARIABLES = {"__range", "__interval", "__rate_interval"}


def dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in cli.rendered().items()}


def test_the_chart_holds_what_the_code_builds() -> None:
    assert cli.drift(CHART_DASHBOARDS) == [], "run `uv run fincart-dashboards` and commit the JSON"
    assert sorted(p.name for p in CHART_DASHBOARDS.glob("*.json")) == sorted(cli.rendered())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "fincart-dashboards"  # the console script, as a developer runs it
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_console_script_writes_and_checks(tmp_path: Path) -> None:
    assert run_cli("--out", str(tmp_path), "--check").returncode == 1  # nothing written yet
    written = run_cli("--out", str(tmp_path))
    assert written.returncode == 0, written.stderr
    assert run_cli("--out", str(tmp_path), "--check").returncode == 0
    (tmp_path / "chaos.json").write_text((tmp_path / "chaos.json").read_text().replace("Verdict history", "x"))
    drifted = run_cli("--out", str(tmp_path), "--check")
    assert drifted.returncode == 1 and "Verdict history" in drifted.stdout and "fincart-dashboards" in drifted.stderr
    missing = run_cli("--out", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


@pytest.mark.parametrize("name", ["pipeline.json", "chaos.json"])
def test_every_panel_has_an_id_unit_and_queries_on_the_datasource_variable(name: str) -> None:
    board = dashboards()[name]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert "datasource" in variables
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids) and 0 not in ids
    for panel in board["panels"]:
        where = f"{name}: {panel['title']}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["description"], where
        if panel["type"] != "table":
            assert panel["fieldConfig"]["defaults"]["unit"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", where
            assert target["instant"] is (panel["type"] in ("stat", "table")), where
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= variables | GRAFANA_VARIABLES, f"{where}: undefined {used - variables}"


def test_the_panels_an_operator_looks_at_first_are_there() -> None:
    titles = {name: {p["title"] for p in board["panels"]} for name, board in dashboards().items()}
    assert {
        "Webhooks in / applied / discarded / failed per second",
        "End-to-end latency webhook -> WebSocket",
        "Backlog per partition",
        "Partition owners",
        "Owners per partition",
        "Dead letters",
    } <= titles["pipeline.json"]
    assert {"Verdict history", "Faults active", "Runs by verdict"} <= titles["chaos.json"]
    (fault_windows,) = dashboards()["chaos.json"]["annotations"]["list"]
    assert fault_windows["name"] == "Fault windows" and "chaostest_fault_injections_total" in fault_windows["expr"]
    assert fault_windows["titleFormat"] == "{{type}}"
