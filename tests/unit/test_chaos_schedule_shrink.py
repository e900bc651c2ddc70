"""Random schedules (same seed, same schedule; one fault at a time with quiet periods) and the shrinker's
search (against a model of a failing system: no stack needed for the search logic)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml
from fincart_chaos.report import Report
from fincart_chaos.shrink import candidates, concrete, shrink, to_yaml
from fincart_chaos.spec_io import parse_documents
from fincart_core.contracts.chaostest import ChaosTest, parse_duration
from fincart_core.contracts.report import Anomaly
from pydantic import ValidationError

BASE: dict[str, Any] = {
    "apiVersion": "chaos.fincart.io/v1alpha1",
    "kind": "ChaosTest",
    "metadata": {"name": "t"},
    "spec": {
        "target": {"ingestUrl": "http://ingest"},
        "load": {"orders": 8, "updatesPerOrder": 4},
        "faults": [
            {"name": "kill", "type": "podKill", "duration": "2s"},
            {
                "name": "hole",
                "type": "network",
                "duration": "4s",
                "network": {"target": {"service": "processor", "upstream": "nats"}, "mode": "blackhole"},
            },
            {"name": "scale", "type": "rescale", "replicas": 3, "duration": "3s"},
        ],
    },
}


def chaostest(**spec: Any) -> ChaosTest:
    return ChaosTest.model_validate({**BASE, "spec": {**BASE["spec"], **spec}})


SCHEDULE = {"seed": 9, "span": "60s", "rate": 20, "quiet": "2s"}


def test_the_same_seed_draws_the_same_schedule_and_another_seed_another():
    first = chaostest(schedule=SCHEDULE).spec.scheduled_faults()
    again = chaostest(schedule=SCHEDULE).spec.scheduled_faults()
    assert [f.model_dump() for f in first] == [f.model_dump() for f in again] and len(first) >= 3
    other = chaostest(schedule={**SCHEDULE, "seed": 10}).spec.scheduled_faults()
    assert [(f.name, f.start_after) for f in other] != [(f.name, f.start_after) for f in first]


def test_a_random_schedule_runs_one_fault_at_a_time_with_quiet_periods_within_the_span():
    drawn = chaostest(schedule={**SCHEDULE, "mix": ["kill", "hole"]}).spec.scheduled_faults()
    templates = {f["name"]: f for f in BASE["spec"]["faults"]}
    for previous, fault in itertools.pairwise(drawn):
        gap = (
            parse_duration(fault.start_after) - parse_duration(previous.start_after) - parse_duration(previous.duration)
        )
        assert gap >= 2.0 - 0.002  # the quiet period (rounded to ms)
    for n, fault in enumerate(drawn):
        template = templates[fault.name.rsplit("-", 1)[0]]
        assert fault.name == f"{template['name']}-{n}" and fault.type == template["type"]
        assert (
            0.5 * parse_duration(template["duration"]) - 0.001
            <= parse_duration(fault.duration)
            <= parse_duration(template["duration"]) + 0.001
        )
        assert parse_duration(fault.start_after) < 60
    assert {f.type for f in drawn} <= {"podKill", "network"}


def test_without_a_schedule_the_faults_run_as_listed():
    assert chaostest().spec.scheduled_faults() == chaostest().spec.faults


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schedule": {"mix": ["nope"]}}, "schedule.mix"),
        ({"faults": [{"name": "n", "type": "network"}]}, "network: required"),
        ({"faults": [{"name": "n", "type": "rescale"}]}, "replicas: required"),
        (
            {"faults": [{"name": "n", "type": "podKill", "replicas": 2}]},
            "replicas: required for type rescale, and only",
        ),
        (
            {
                "faults": [
                    {
                        "name": "n",
                        "type": "network",
                        "network": {"target": {"service": "runners", "upstream": "nats"}, "mode": "reset"},
                    }
                ]
            },
            "runners does not connect to nats",
        ),
        (
            {
                "faults": [
                    {
                        "name": "n",
                        "type": "network",
                        "network": {"target": {"service": "processor", "upstream": "nats"}, "mode": "bandwidth"},
                    }
                ]
            },
            "bytesPerSecond",
        ),
    ],
)
def test_bad_fault_specs_name_the_problem(change: dict[str, Any], message: str):
    with pytest.raises(ValidationError, match=message):
        chaostest(**change)


# ---- shrinking, against a model: the system fails I5 while the blackhole is at least 1 s long and there are
# at least 2 orders; the other faults and the rest of the load do not matter


def model_run(candidate: ChaosTest) -> Report:
    hole = next((f for f in candidate.spec.faults if f.type == "network"), None)
    fails = hole is not None and parse_duration(hole.duration) >= 1 and candidate.spec.load.orders >= 2
    anomalies = [Anomaly(invariant="I5", message="lost", count=1)] if fails else []
    return Report(name=candidate.metadata.name, verdict="Fail" if fails else "Pass", anomalies=anomalies)


def test_shrinking_keeps_only_what_still_fails():
    original = chaostest(schedule=SCHEDULE)
    result = shrink(original, model_run(concrete(original)), model_run, max_runs=200)
    spec = result.test.spec
    assert [f.type for f in spec.faults] == ["network"] and spec.schedule is None
    assert 1 <= parse_duration(spec.faults[0].duration) < 2  # halved while it still failed
    assert (spec.load.orders, spec.load.updates_per_order, spec.load.concurrency) == (2, 1, 1)
    assert result.failing == {"I5"} and result.steps[0].startswith("without fault")
    assert model_run(result.test).verdict == "Fail"


def test_shrinking_stops_at_the_run_bound_and_ignores_other_failures():
    def other_bug(candidate: ChaosTest) -> Report:
        return Report(name="t", verdict="Fail", anomalies=[Anomaly(invariant="I2", message="stale", count=1)])

    result = shrink(chaostest(), model_run(chaostest()), other_bug, max_runs=4)
    assert result.runs == 4 and result.steps == [] and result.test == concrete(chaostest())


def test_the_shrunk_test_is_a_valid_chaostest_document():
    text = to_yaml(chaostest(), "shrunk from r.json\n- without fault kill")
    assert text.startswith("# shrunk from r.json\n# - without fault kill\n")
    (again,) = parse_documents(text)
    assert again.metadata.name == "t-shrunk" and again.spec == chaostest().spec
    assert "status" not in yaml.safe_load(text)


def test_candidates_reduce_one_thing_each():
    names = [name for name, _ in candidates(chaostest())]
    assert names[:3] == ["without fault kill", "without fault hole", "without fault scale"]
    assert "fault hole for 2000ms" in names and "orders 4" in names and "updates_per_order 2" in names
