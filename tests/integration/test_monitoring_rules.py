"""The chart's PrometheusRule through Prometheus's own tool: ``promtool check rules`` on the groups helm renders,
and ``promtool test rules`` on tests/promtool/alerts.test.yaml (input series -> expected alerts at given times),
with a firing and a non-firing case for every alert. promtool comes with Debian's ``prometheus`` (.ci/run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_deploy_chart import by_kind, helm, render  # noqa: F401  (helm is a fixture)

ROOT = Path(__file__).resolve().parents[2]
UNIT_TESTS = ROOT / "tests" / "promtool" / "alerts.test.yaml"
PROMTOOL_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not on PATH: `apt-get install prometheus` (.ci/run installs it)")
    return found


def rendered_rule_groups(helm: str) -> list[dict[str, Any]]:  # noqa: F811
    """spec.groups of the PrometheusRule as helm renders it with the chart's default thresholds."""
    (rule,) = by_kind(render(helm, "--set", "monitoring.prometheusRule.enabled=true"), "PrometheusRule").values()
    return rule["spec"]["groups"]


def alert_rules(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def write_rules(groups: list[dict[str, Any]], folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_promtool_checks_the_rendered_rules(helm: str, promtool: str, tmp_path: Path) -> None:  # noqa: F811
    rules = write_rules(rendered_rule_groups(helm), tmp_path)
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_runbook_severity_and_summary(helm: str) -> None:  # noqa: F811
    alerts = alert_rules(rendered_rule_groups(helm))
    assert len(alerts) >= 15
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        assert len(rule["annotations"]["runbook"]) > 40, name


def with_static_annotations(unit_tests: dict[str, Any], alerts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The unit tests with each expected alert's description and runbook taken from its rule (static text,
    not worth repeating); a summary the test does not give is the rule's (then it must not be templated)."""
    for case in unit_tests["tests"]:
        for check in case.get("alert_rule_test", []):
            annotations = alerts[check["alertname"]]["annotations"]
            for expected in check["exp_alerts"]:
                given = expected.setdefault("exp_annotations", {})
                for key, text in annotations.items():
                    if key not in given:
                        assert "{{" not in text, f"{check['alertname']}: write its templated {key} in the test"
                        given[key] = text
    return unit_tests


def test_every_alert_has_a_firing_and_a_non_firing_case(helm: str) -> None:  # noqa: F811
    alerts = alert_rules(rendered_rule_groups(helm))
    checks = [c for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for c in case.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert set(alerts) - firing == set(), "alerts without a firing case"
    assert set(alerts) - quiet == set(), "alerts without a non-firing case"
    assert (firing | quiet) - set(alerts) == set(), "unit tests of alerts the chart does not have"


def test_promtool_unit_tests_of_every_alert(helm: str, promtool: str, tmp_path: Path) -> None:  # noqa: F811
    groups = rendered_rule_groups(helm)
    write_rules(groups, tmp_path)
    unit_tests = with_static_annotations(yaml.safe_load(UNIT_TESTS.read_text()), alert_rules(groups))
    test_file = tmp_path / UNIT_TESTS.name
    test_file.write_text(yaml.safe_dump(unit_tests, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
