"""The ChaosTest CRD generated from the pydantic models: the file in the chart is current, Kubernetes accepts it, and
the CRD schema and the models accept and reject the same specs and fill in the same defaults."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fincart_chaos.spec_io import parse_documents
from fincart_core.contracts.chaostest import ChaosTestSpec, ChaosTestStatus, Settle
from fincart_operator import crd as crd_module
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / crd_module.CRD_PATH
K8S_VERSION = "1.35.0"  # as in tests/integration/test_deploy_chart.py (the helm/kubectl layer's Kubernetes)
EXAMPLES = sorted((ROOT / "examples").glob("chaostest-*.yaml"))

CRD = crd_module.build_crd()
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def as_jsonschema(node: Any) -> Any:
    """`nullable: true` is OpenAPI, not JSON schema: widen the type with "null" instead."""
    if isinstance(node, list):
        return [as_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: as_jsonschema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        out["type"] = [node["type"], "null"]
    return out


SPEC_SCHEMA = as_jsonschema(SCHEMA["properties"]["spec"])
STATUS_SCHEMA = as_jsonschema(SCHEMA["properties"]["status"])


def crd_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(instance)]


# ---------------------------------------------------------------- the file and Kubernetes


def test_chart_crd_file_is_generated_from_the_models() -> None:
    assert CRD_FILE.read_text() == crd_module.render(), (
        f"{crd_module.CRD_PATH} is out of date: run `uv run fincart-operator-crd > {crd_module.CRD_PATH}`"
    )
    assert yaml.safe_load(CRD_FILE.read_text()) == CRD


def test_check_flag_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd_module.main(["--check", str(CRD_FILE)]) == 0
    stale = tmp_path / "chaostests.yaml"
    stale.write_text(crd_module.render().replace("minimum: 1\n", "minimum: 0\n", 1))
    assert crd_module.main(["--check", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "uv run fincart-operator-crd >" in err and "+                    minimum: 1" in err


def test_crd_is_valid_for_kubernetes() -> None:
    kubernetes_validate.validate(CRD, K8S_VERSION, strict=True)
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == "chaostests.chaos.fincart.io" and CRD["spec"]["scope"] == "Namespaced"
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == (
        "ChaosTest",
        "chaostests",
        "chaostest",
        ["ct"],
    )
    (version,) = CRD["spec"]["versions"]
    assert version["served"] and version["storage"] and version["subresources"] == {"status": {}}
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert columns["Lost"] == ("integer", ".status.counts.lost") and columns["Age"][0] == "date"


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from schema_nodes(prop, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from schema_nodes(node[key], f"{path}[{key}]")


def test_schema_is_structural() -> None:
    """What the API server demands of a structural schema (kubernetes-validate checks only the CRD's shape)."""
    for path, node in schema_nodes(SCHEMA):
        assert node.get("type"), f"{path}: no type"
        assert not {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title"} & node.keys(), f"{path}: {sorted(node)}"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:  # defaults must validate under their own schema
            assert not crd_errors(node["default"], as_jsonschema(node)), path


# ---------------------------------------------------------------- the schema and the models agree


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_the_model_and_the_crd_schema(path: Path) -> None:
    tests = parse_documents(path.read_text(), str(path))
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(tests) == len(docs) >= 1
    for doc, test in zip(docs, tests, strict=True):
        assert crd_errors(doc["spec"], SPEC_SCHEMA) == [], doc["metadata"]["name"]
        # the API server's defaulting gives what pydantic's defaulting gives
        defaulted = apply_defaults(copy.deepcopy(doc["spec"]), SCHEMA["properties"]["spec"])
        assert defaulted == test.spec.model_dump(by_alias=True, mode="json", exclude_none=True)


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it: missing fields get their default, then recurse."""
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                apply_defaults(value[name], prop)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(item, schema["items"])
    return value


BASE = {"target": {"ingestUrl": "http://ingest:8080"}, "faults": [{"name": "kill", "type": "podKill"}]}


def mutated(fault: dict[str, Any] | None = None, drop: str = "", **change: Any) -> dict[str, Any]:
    spec = copy.deepcopy({**BASE, **change})
    spec["faults"][0].update(fault or {})
    spec.pop(drop, None)
    return spec


BAD_SPECS = {
    "ratio-1.5": mutated(load={"duplicateRatio": 1.5}),
    "unknown-fault-type": mutated(fault={"type": "meteorStrike"}),
    "negative-orders": mutated(load={"orders": -5}),
    "duration-soon": mutated(fault={"duration": "soon"}),
    "empty-duration": mutated(fault={"startAfter": ""}),
    "fault-name-Bad_Name": mutated(fault={"name": "Bad_Name"}),
    "no-target": mutated(drop="target"),
    "no-invariants": mutated(verification={"invariants": []}),
    "selector-not-strings": mutated(fault={"selector": {"app": 1}}),
}


@pytest.mark.parametrize("spec", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_specs_are_rejected_by_both(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChaosTestSpec.model_validate(spec)
    assert crd_errors(spec, SPEC_SCHEMA), "the CRD schema accepted it"


def test_good_spec_passes_both_and_duplicate_fault_names_are_a_list_map() -> None:
    assert crd_errors(BASE, SPEC_SCHEMA) == []
    ChaosTestSpec.model_validate(BASE)
    twice = mutated(faults=BASE["faults"] * 2)
    with pytest.raises(ValidationError, match="duplicate"):
        ChaosTestSpec.model_validate(twice)
    faults = SCHEMA["properties"]["spec"]["properties"]["faults"]  # the API server rejects duplicate keys
    assert (faults["x-kubernetes-list-type"], faults["x-kubernetes-list-map-keys"]) == ("map", ["name"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="019hms", max_size=8))
def test_duration_pattern_accepts_what_the_model_accepts(text: str) -> None:
    try:
        Settle(timeout=text)
        model_ok = True
    except ValidationError:
        model_ok = False
    timeout = SPEC_SCHEMA["properties"]["settle"]["properties"]["timeout"]
    assert (crd_errors(text, timeout) == []) == model_ok, text


def test_statuses_the_operator_writes_pass_the_crd_schema() -> None:
    full = ChaosTestStatus(
        phase="Completed",
        verdict="Fail",
        message="2 lost",
        observed_generation=3,
        start_time="2026-01-01T10:00:00Z",
        completion_time="2026-01-01T10:05:00Z",
        conditions=[
            {
                "type": "Verified",
                "status": "True",
                "reason": "Done",
                "message": "ok",
                "last_transition_time": "2026-01-01T10:05:00Z",
            }
        ],
        runners={"desired": 2, "active": 0, "succeeded": 2, "failed": 0},
        faults=[
            {
                "name": "kill",
                "type": "podKill",
                "started_at": "2026-01-01T10:01:00Z",
                "healed_at": "2026-01-01T10:01:10Z",
                "result": "healed",
                "message": "pod deleted",
            }
        ],
        counts={"sent": 10, "acked": 10, "stored": 8, "lost": 2, "duplicated": 0, "unexpected": 0},
        anomalies=[{"invariant": "I1", "message": "lost", "count": 2, "samples": ["o-1", "o-2"]}],
        report_ref="faults-report",
        bundle="nats object store chaos-reports: 0123abcd/",
    )
    dumped = full.model_dump(by_alias=True, mode="json")
    assert None not in dumped.values()
    assert crd_errors(dumped, STATUS_SCHEMA) == []
    assert crd_errors(ChaosTestStatus().model_dump(by_alias=True, mode="json"), STATUS_SCHEMA) == []  # nulls
    assert crd_errors({**dumped, "verdict": "Maybe"}, STATUS_SCHEMA)
    assert crd_errors(
        {**dumped, "anomalies": [{"invariant": "I1", "message": "", "count": 1, "samples": ["x"] * 11}]}, STATUS_SCHEMA
    )


def model_nodes(model: type[BaseModel], node: dict[str, Any]) -> Iterator[tuple[type[BaseModel], dict[str, Any]]]:
    """Every model reachable from `model`, with the CRD schema node that stands for it."""
    yield model, node
    for name, field in model.model_fields.items():
        prop = node["properties"][field.alias or name]
        for sub in get_args(field.annotation) or (field.annotation,):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                yield from model_nodes(sub, prop.get("items", prop))


FIELDS = [
    pytest.param(model, name, node, id=f"{model.__name__}.{name}")
    for root, key in ((ChaosTestSpec, "spec"), (ChaosTestStatus, "status"))
    for model, node in model_nodes(root, SCHEMA["properties"][key])
    for name in model.model_fields
]


@pytest.mark.parametrize(("model", "name", "node"), FIELDS)
def test_schema_defaults_are_the_model_defaults(model: type[BaseModel], name: str, node: dict[str, Any]) -> None:
    field = model.model_fields[name]
    alias = field.alias or name
    prop = node["properties"][alias]
    assert field.is_required() == (alias in node.get("required", []))
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    if default is None:  # required, or None (= absent)
        assert "default" not in prop
        assert prop.get("nullable", False) is not field.is_required()
        return
    assert prop["default"] == TypeAdapter(field.annotation).dump_python(default, by_alias=True, mode="json")
