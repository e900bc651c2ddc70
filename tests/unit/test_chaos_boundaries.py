"""What a ChaosTest may reach (fincart_core.contracts.boundaries): the pure rules, the operator's decision
and `fincart-chaos validate --namespace`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fincart_chaos.cli import app
from fincart_chaos.spec_io import load_file
from fincart_core.contracts.boundaries import INGRESS_CONTROLLER_URL, Boundaries, boundary_problems
from fincart_core.contracts.chaostest import ChaosTestSpec, ChaosTestStatus
from fincart_operator.children import Owner
from fincart_operator.reconcile import Create, Observed, decide
from fincart_operator.settings import OperatorSettings
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("chaostest-*.yaml"))
# as the chart configures the operator with its Ingress on (ingress.controller.url: the examples' target)
RULES = Boundaries(namespace="shop", allow_db_faults=True, allowed_origins=frozenset({INGRESS_CONTROLLER_URL}))
SECRET = {"name": "fincart", "key": "k"}


def spec(target: dict[str, Any] | None = None, faults: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    base = {
        "ingestUrl": "http://fincart-ingest:8080",
        "syncUrl": "http://fincart-sync:8082",
        "hmacSecretRef": SECRET,
        "databaseUrlSecretRef": SECRET,
        "syncTokenSecretRef": SECRET,
    }
    return {"target": {**base, **(target or {})}, "faults": faults or []}


def problems(raw: dict[str, Any], rules: Boundaries = RULES) -> list[str]:
    return boundary_problems(ChaosTestSpec.model_validate(raw), rules)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_stay_inside(example: Path) -> None:
    for test in load_file(example):
        assert boundary_problems(test.spec, RULES) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://fincart-ingest:8080",
        "http://fincart-ingest.shop:8080",
        "https://fincart-ingest.shop.svc",
        "http://fincart-ingest.shop.svc.cluster.local:8080/",
    ],
)
def test_ingest_urls_of_the_namespace(url: str) -> None:
    assert problems(spec({"ingestUrl": url})) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://fincart-ingest.other:8080",  # another namespace's FinCart
        "http://fincart-ingest.shop.evil.example:8080",  # looks alike, resolves elsewhere
        "http://10.0.0.7:8080",
        "http://kubernetes.default.svc",
        "http://metadata.google.internal",
        "http://fincart-sync:8082",  # sync is not an ingest service
        "http://user:pw@fincart-ingest:8080",
        "ftp://fincart-ingest",
        "http://fincart-ingest:99999",
    ],
)
def test_ingest_urls_elsewhere_are_refused_naming_the_field(url: str) -> None:
    (problem,) = problems(spec({"ingestUrl": url}))
    assert problem.startswith("spec.target.ingestUrl:")


def test_sync_url_and_the_origin_allow_list() -> None:
    (problem,) = problems(spec({"syncUrl": "http://fincart-ingest:8080"}))
    assert problem.startswith("spec.target.syncUrl:")
    allowed = Boundaries(namespace="shop", allowed_origins=frozenset({"https://staging.example/"}))
    assert problems(spec({"syncUrl": "https://STAGING.example/api"}), allowed) == []


@pytest.mark.parametrize(
    ("selector", "ok"),
    [
        (
            {"app.kubernetes.io/component": "processor", "statefulset.kubernetes.io/pod-name": "fincart-processor-0"},
            True,
        ),
        ({"app.kubernetes.io/component": "nats"}, True),
        ({"app.kubernetes.io/component": "operator"}, False),
        ({"app.kubernetes.io/component": "postgres"}, False),
        ({"app": "processor"}, False),  # not by the FinCart component label
    ],
)
def test_fault_selectors_pick_fincart_components_only(selector: dict[str, str], ok: bool) -> None:
    found = problems(spec(faults=[{"name": "f", "type": "podKill", "selector": selector}]))
    assert (found == []) is ok
    assert all(p.startswith("spec.faults[0].selector:") for p in found)


def test_database_faults_need_the_setting() -> None:
    raw = spec(faults=[{"name": "drop", "type": "dbConnectionDrop"}])
    assert problems(raw) == []
    (problem,) = problems(raw, Boundaries(namespace="shop"))
    assert problem.startswith("spec.faults[0].type:") and "FINCART_CHAOS_ALLOW_DB_FAULTS" in problem


def test_secret_refs_name_allowed_secrets_only() -> None:
    found = problems(
        spec(
            {
                "hmacSecretRef": {"name": "kube-root-ca", "key": "ca.crt"},
                "syncTokenSecretRef": {"name": "postgres-admin", "key": "password"},
            }
        )
    )
    assert [p.split(":")[0] for p in found] == ["spec.target.hmacSecretRef.name", "spec.target.syncTokenSecretRef.name"]


def test_the_operator_ends_a_violating_test_in_error_without_children() -> None:
    raw = spec(
        {"ingestUrl": "http://fincart-ingest.other:8080"},
        [{"name": "kill", "type": "podKill", "selector": {"app.kubernetes.io/component": "operator"}}],
    )
    settings = OperatorSettings(runner_image="fincart-chaos:test")
    decision = decide(
        Owner("t", "shop", "0123456789abcdef"),
        raw,
        ChaosTestStatus(),
        Observed(),
        datetime(2026, 1, 1, tzinfo=UTC),
        settings,
    )
    assert decision.status.phase == "Error" and decision.status.verdict == "Error"
    message = decision.status.message or ""
    assert "spec.target.ingestUrl" in message and "spec.faults[0].selector" in message
    assert not [a for a in decision.actions if isinstance(a, Create)]


def test_cli_validate_applies_the_same_rules(tmp_path: Path) -> None:
    runner = CliRunner()
    faults = str(ROOT / "examples" / "chaostest-faults.yaml")
    assert runner.invoke(app, ["validate", faults]).exit_code == 0  # the spec alone
    refused = runner.invoke(app, ["validate", faults, "--namespace", "fincart"])
    assert refused.exit_code == 2 and "].type: dbConnectionDrop" in refused.output
    assert runner.invoke(app, ["validate", faults, "--namespace", "fincart", "--allow-db-faults"]).exit_code == 0
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(
        (ROOT / "examples" / "chaostest-seed.yaml")
        .read_text()
        .replace(f"syncUrl: {INGRESS_CONTROLLER_URL}", "syncUrl: http://169.254.169.254")
    )
    refused = runner.invoke(app, ["validate", str(elsewhere), "--namespace", "fincart"])
    assert refused.exit_code == 2 and "spec.target.syncUrl" in refused.output
