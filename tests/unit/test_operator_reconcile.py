"""The operator's decisions, called directly: spec + status + observed children + time -> actions + status."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fincart_core.contracts.chaostest import ChaosTestSpec, ChaosTestStatus, Condition, parse_duration
from fincart_core.contracts.report import FaultRecord
from fincart_operator import children, metrics
from fincart_operator.children import Owner
from fincart_operator.kube import job_view, owned, termination_message
from fincart_operator.reconcile import (
    RESTORE_ANNOTATION,
    Annotate,
    Create,
    Decision,
    Delete,
    Event,
    JobView,
    Observed,
    ProxyCall,
    Restore,
    Scale,
    Workload,
    decide,
    load_deadline,
    needs_attention,
    orphaned_restores,
    parse_status,
    restore_message,
    restore_targets,
)
from fincart_operator.settings import OperatorSettings
from prometheus_client import REGISTRY
from pydantic import TypeAdapter

OWNER = Owner("seed", "chaos", "0123456789abcdef", generation=3)
SETTINGS = OperatorSettings(
    runner_image="fincart-chaos:test",
    poll_interval_s=1.5,
    load_deadline_s=600,
    verify_deadline_s=100,
    fault_job_deadline_s=30,
    max_fault_repeats=3,
    chaos_allow_db_faults=True,
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOAD, VERIFY = "seed-load", "seed-verify"
PODS = {"kill": ("fincart-processor-0", "fincart-processor-1")}
WORKLOADS = {"pause": (Workload("StatefulSet", "fincart-processor", 2), Workload("Deployment", "fincart-x", 1))}
PROCESSOR = {"app.kubernetes.io/component": "processor"}
FAULTS = [
    {"name": "kill", "type": "podKill", "selector": PROCESSOR, "startAfter": "5s", "duration": "2s"},
    {"name": "pause", "type": "processorPause", "selector": PROCESSOR, "startAfter": "10s", "duration": "10s"},
    {"name": "drop", "type": "dbConnectionDrop", "startAfter": "10s", "duration": "5s"},
]


def spec(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "target": {
            "ingestUrl": "http://fincart-ingest:8080",
            "hmacSecretRef": {"name": "fincart", "key": "webhook-secret"},
            "databaseUrlSecretRef": {"name": "fincart", "key": "database-url"},
        },
        "load": {"orders": 10, "updatesPerOrder": 5, "parallelism": 3},
        "faults": [],
    }
    raw.update(changes)
    return raw


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(
    status: ChaosTestStatus,
    observed: Observed = Observed(),  # noqa: B008 (a frozen value)
    seconds: float = 0,
    raw: dict[str, Any] | None = None,
) -> Decision:
    return decide(OWNER, spec() if raw is None else raw, status, observed, at(seconds), SETTINGS)


def of(decision: Decision, kind: type) -> list[Any]:
    return [a for a in decision.actions if isinstance(a, kind)]


def created(decision: Decision) -> dict[str, dict[str, Any]]:
    return {a.body["metadata"]["name"]: a.body for a in of(decision, Create)}


def cluster_after(observed: Observed, decision: Decision) -> Observed:
    """What the cluster looks like after the actions (children created, deleted, workloads scaled)."""
    jobs, maps = dict(observed.jobs), set(observed.config_maps)
    workloads = {f: list(ws) for f, ws in observed.workloads.items()}
    for action in decision.actions:
        match action:
            case Create(body=body) if body["kind"] == "Job":
                jobs[body["metadata"]["name"]] = JobView(body["metadata"]["name"])
            case Create(body=body):
                maps.add(body["metadata"]["name"])
            case Delete(kind="Job", name=name):
                jobs.pop(name, None)
            case Scale(kind=kind, name=name, replicas=replicas):
                for ws in workloads.values():
                    ws[:] = [Workload(w.kind, w.name, replicas) if (w.kind, w.name) == (kind, name) else w for w in ws]
    return dataclasses.replace(
        observed, jobs=jobs, config_maps=frozenset(maps), workloads={f: tuple(ws) for f, ws in workloads.items()}
    )


def finish_job(observed: Observed, name: str, outcome: str = "succeeded", message: str = "") -> Observed:
    return dataclasses.replace(observed, jobs={**observed.jobs, name: JobView(name, outcome, message=message)})  # type: ignore[arg-type]


def running(faults: list[dict[str, Any]] | None = None, **observed: Any) -> tuple[ChaosTestStatus, Observed, dict]:
    """A test that just started at T0 (load Job and spec ConfigMap exist)."""
    raw = spec(faults=faults or [])
    start = step(ChaosTestStatus(), raw=raw)
    return start.status, cluster_after(Observed(**observed), start), raw


def summary(verdict: str = "Pass", **extra: Any) -> str:
    counts = {"sent": 50, "acked": 50, "stored": 50, "lost": 0, "duplicated": 0, "unexpected": 0}
    return json.dumps({"verdict": verdict, "counts": {**counts, **extra.pop("counts", {})}, **extra})


# ---------------------------------------------------------------- start


def test_runners_connect_to_nats_as_the_chaos_user_when_the_chart_gives_a_password() -> None:
    """The password variable precedes the URL that names it: Kubernetes expands $(VAR) only from earlier ones."""
    settings = OperatorSettings(
        nats_url="nats://fincart-nats:4222,nats://old:pw@fincart-nats-1:4222",
        runner_nats_password_secret="fincart-internal",
    )
    parsed = ChaosTestSpec.model_validate(spec())
    for job in (children.load_job(OWNER, parsed, settings, 60), children.verify_job(OWNER, parsed, settings, 60)):
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        names = [e["name"] for e in env]
        assert names.index("FINCART_NATS_PASSWORD") < names.index("FINCART_NATS_URL")
        by_name = {e["name"]: e for e in env}
        assert by_name["FINCART_NATS_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "fincart-internal", "key": "nats-chaos-password"}
        }
        assert by_name["FINCART_NATS_URL"]["value"] == (
            "nats://chaos:$(FINCART_NATS_PASSWORD)@fincart-nats:4222,nats://chaos:$(FINCART_NATS_PASSWORD)@fincart-nats-1:4222"
        )


def test_start_creates_the_spec_config_map_and_an_indexed_load_job() -> None:
    decision = step(ChaosTestStatus())
    status = decision.status
    assert (status.phase, status.start_time, status.runners.desired, status.observed_generation) == (
        "Running",
        "2026-01-01T00:00:00.000Z",
        3,
        3,
    )
    bodies = created(decision)
    assert set(bodies) == {"seed-spec", LOAD}
    job = bodies[LOAD]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["backoffLimit"] == 0  # a retried runner would send its webhooks again
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "fincart-chaos:test"
    assert container["args"] == [
        "load",
        "/etc/fincart-chaos/chaostest.yaml",
        "--runner-index",
        "$(JOB_COMPLETION_INDEX)",
        "--publish-ledger",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["FINCART_CHAOS_RUN_ID"]["value"] == "01234567"
    assert (env["FINCART_NATS_URL"]["value"], env["FINCART_NATS_PREFIX"]["value"]) == (SETTINGS.nats_url, "")
    assert env["FINCART_WEBHOOK_SECRET"]["valueFrom"] == {"secretKeyRef": {"name": "fincart", "key": "webhook-secret"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    for body, role in ((job, "load"), (bodies["seed-spec"], "spec")):
        meta = body["metadata"]
        assert meta["labels"] == {
            "app.kubernetes.io/managed-by": "fincart-operator",
            "chaos.fincart.io/test": "seed",
            "chaos.fincart.io/role": role,
        }
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "chaos.fincart.io/v1alpha1",
                "kind": "ChaosTest",
                "name": "seed",
                "uid": OWNER.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert [(e.type, e.reason) for e in of(decision, Event)] == [("Normal", "Running")]


def test_the_spec_config_map_is_a_whole_chaostest_the_runners_can_read() -> None:
    from fincart_chaos.spec_io import parse_documents

    text = created(step(ChaosTestStatus()))["seed-spec"]["data"]["chaostest.yaml"]
    (test,) = parse_documents(text)
    assert test.metadata.name == "seed" and test.spec == ChaosTestSpec.model_validate(spec())


def test_nothing_starts_before_the_finalizer_is_on() -> None:
    decision = step(ChaosTestStatus(), Observed(finalized=False))
    assert decision.actions == [] and decision.status.phase == "Pending" and decision.wait_s == 1.5


def test_deciding_twice_creates_nothing_new() -> None:
    status, observed, raw = running(FAULTS, pods=PODS, workloads=WORKLOADS)
    again = step(ChaosTestStatus(), observed, raw=raw)  # crash after the creates, before the status was written
    assert of(again, Create) == [] and again.status.phase == "Running"
    first = step(status, observed, seconds=10, raw=raw)
    second = step(first.status, cluster_after(observed, first), seconds=10, raw=raw)
    assert of(second, Create) == [] and of(second, Delete) == []


# ---------------------------------------------------------------- invalid specs


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (spec(load={"parallelism": 0}), "spec.load.parallelism"),
        (spec(target={"ingestUrl": "http://x"}), "spec.target.hmacSecretRef"),
        (
            spec(
                target={
                    "ingestUrl": "http://x",
                    "syncUrl": "http://y",
                    "hmacSecretRef": {"name": "f", "key": "w"},
                    "databaseUrlSecretRef": {"name": "f", "key": "d"},
                }
            ),
            "spec.target.syncTokenSecretRef",
        ),
        (spec(faults=[{"name": "k", "type": "podKill"}]), "spec.faults[0].selector"),
        (
            spec(
                faults=[
                    {"name": "k", "type": "redisOutage", "selector": {"a": "b"}, "duration": "10s", "interval": "5s"}
                ]
            ),
            "spec.faults[0].interval",
        ),
        (
            spec(
                faults=[
                    {"name": "k", "type": "redisOutage", "selector": {"a": "b"}, "duration": "10s", "interval": "10s"}
                ]
            ),
            "spec.faults[0].interval",
        ),
        (spec(faults=[{"name": "x" * 49, "type": "dbConnectionDrop"}]), "spec.faults[0].name"),  # 64 characters
        (spec(abort="maybe"), "spec.abort"),
    ],
)
def test_an_invalid_spec_is_an_error_naming_the_field_and_starts_nothing(raw: dict[str, Any], field: str) -> None:
    decision = step(ChaosTestStatus(), raw=raw)
    assert decision.status.phase == "Error" and decision.status.verdict == "Error"
    assert field in (decision.status.message or "")
    assert of(decision, Create) == []
    assert [(e.type, e.reason) for e in of(decision, Event)] == [("Warning", "InvalidSpec")]
    assert decision.status.conditions == []  # it never ran nor verified


def test_a_name_too_long_for_its_children_is_invalid() -> None:
    decision = decide(Owner("n" * 57, "chaos", "u" * 8), spec(), ChaosTestStatus(), Observed(), T0, SETTINGS)
    assert decision.status.phase == "Error" and "metadata.name" in (decision.status.message or "")
    longest = decide(Owner("n" * 56, "chaos", "u" * 8), spec(), ChaosTestStatus(), Observed(), T0, SETTINGS)
    assert longest.status.phase == "Running"  # 56 + len("-verify") = 63
    drop = {"name": "x" * 48, "type": "dbConnectionDrop"}  # seed-fault-<48>-999: 63 characters
    assert step(ChaosTestStatus(), raw=spec(faults=[drop])).status.phase == "Running"


# ---------------------------------------------------------------- faults


def test_pod_faults_delete_the_selected_pods_on_schedule_and_heal_after_the_duration() -> None:
    status, observed, raw = running(FAULTS[:1], pods=PODS)
    early = step(status, observed, seconds=4.9, raw=raw)
    assert early.actions == [] and early.status.faults == []
    kill = step(status, observed, seconds=5, raw=raw)
    assert of(kill, Delete) == [Delete("Pod", "fincart-processor-0"), Delete("Pod", "fincart-processor-1")]
    (entry,) = kill.status.faults
    assert (entry.name, entry.result, entry.started_at) == ("kill", "injected", "2026-01-01T00:00:05.000Z")
    held = step(kill.status, observed, seconds=6.9, raw=raw)
    assert held.actions == [] and held.status == kill.status.model_copy(update={})
    healed = step(kill.status, observed, seconds=7, raw=raw)
    assert healed.status.faults[0].result == "healed" and of(healed, Delete) == []
    assert [(e.type, e.reason, e.message) for e in of(kill, Event)] == [
        ("Normal", "FaultInjected", "podKill kill: deleted 2 pod(s): fincart-processor-0, fincart-processor-1")
    ]
    assert [(e.type, e.reason) for e in of(healed, Event)] == [("Normal", "FaultHealed")]
    assert step(healed.status, observed, seconds=8, raw=raw).actions == []  # healed once


def test_a_pod_fault_names_at_most_five_of_the_pods_it_deleted() -> None:
    pods = tuple(f"fincart-processor-{n}" for n in range(7))
    status, observed, raw = running(FAULTS[:1], pods={"kill": pods})
    decision = step(status, observed, seconds=5, raw=raw)
    assert len(of(decision, Delete)) == 7
    assert decision.status.faults[0].message == f"deleted 7 pod(s): {', '.join(pods[:5])}"


def test_a_pod_fault_without_matching_pods_is_failed_and_the_test_goes_on() -> None:
    status, observed, raw = running(FAULTS[:1])
    decision = step(status, observed, seconds=5, raw=raw)
    assert decision.status.phase == "Running"
    assert decision.status.faults[0].result == "failed" and "component=processor" in decision.status.faults[0].message
    assert [(e.type, e.reason) for e in of(decision, Event)] == [("Warning", "FaultFailed")]


def test_scale_faults_record_the_replicas_before_scaling_to_zero_and_restore_them() -> None:
    status, observed, raw = running(FAULTS[1:2], workloads=WORKLOADS)
    record = step(status, observed, seconds=10, raw=raw)
    assert of(record, Scale) == []  # the replicas to restore are written first
    assert restore_targets(record.status.faults[0].message) == list(WORKLOADS["pause"])
    message = "scaled to 0; restore StatefulSet/fincart-processor=2 Deployment/fincart-x=1"
    assert record.status.faults[0].message == message == restore_message(WORKLOADS["pause"])
    hold = step(record.status, observed, seconds=10.1, raw=raw)
    assert of(hold, Scale) == [Scale("StatefulSet", "fincart-processor", 0), Scale("Deployment", "fincart-x", 0)]
    observed = cluster_after(observed, hold)
    assert step(record.status, observed, seconds=15, raw=raw).actions == []  # held at 0
    heal = step(record.status, observed, seconds=20, raw=raw)
    assert of(heal, Scale) == [Scale("StatefulSet", "fincart-processor", 2), Scale("Deployment", "fincart-x", 1)]
    assert heal.status.faults[0].result == "healed"


def test_a_scale_fault_restores_a_workload_its_selector_no_longer_matches() -> None:
    status, observed, raw = running(FAULTS[1:2], workloads=WORKLOADS)
    record = step(status, observed, seconds=10, raw=raw)
    relabelled = dataclasses.replace(observed, workloads={"pause": WORKLOADS["pause"][1:]})
    hold = step(record.status, relabelled, seconds=11, raw=raw)
    assert of(hold, Scale) == [Scale("Deployment", "fincart-x", 0)]
    heal = step(record.status, cluster_after(relabelled, hold), seconds=20, raw=raw)
    assert of(heal, Scale) == [Scale("StatefulSet", "fincart-processor", 2), Scale("Deployment", "fincart-x", 1)]


def test_a_restarted_operator_heals_a_scale_fault_from_the_status_alone() -> None:
    status, observed, raw = running(FAULTS[1:2], workloads=WORKLOADS)
    record = step(status, observed, seconds=10, raw=raw)
    scaled = cluster_after(observed, step(record.status, observed, seconds=10, raw=raw))
    persisted = parse_status(json.loads(record.status.model_dump_json(by_alias=True)))  # what the API gives back
    heal = step(persisted, scaled, seconds=25, raw=raw)
    assert of(heal, Scale) == [Scale("StatefulSet", "fincart-processor", 2), Scale("Deployment", "fincart-x", 1)]


def test_db_connection_drop_runs_a_fault_job_healed_when_it_completes() -> None:
    status, observed, raw = running(FAULTS[2:])
    inject = step(status, observed, seconds=10, raw=raw)
    job = created(inject)["seed-fault-drop-0"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["inject", "dbConnectionDrop", "--duration", "5s"]
    assert container["env"] == [
        {"name": "FINCART_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "fincart", "key": "database-url"}}}
    ]
    assert job["metadata"]["labels"]["chaos.fincart.io/role"] == "fault"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 35
    observed = cluster_after(observed, inject)
    assert step(inject.status, observed, seconds=14, raw=raw).actions == []
    done = step(inject.status, finish_job(observed, "seed-fault-drop-0"), seconds=15, raw=raw)
    assert done.status.faults[0].result == "healed"
    failed = step(
        inject.status, finish_job(observed, "seed-fault-drop-0", "failed", "BackoffLimitExceeded"), seconds=15, raw=raw
    )
    assert failed.status.faults[0].result == "failed" and "BackoffLimitExceeded" in failed.status.faults[0].message


def test_a_fault_job_past_its_deadline_is_an_error_and_is_removed() -> None:
    status, observed, raw = running(FAULTS[2:])
    inject = step(status, observed, seconds=10, raw=raw)
    assert step(inject.status, cluster_after(observed, inject), seconds=10 + 5 + 30, raw=raw).status.phase == "Running"
    late = step(inject.status, cluster_after(observed, inject), seconds=10 + 5 + 30.1, raw=raw)
    assert late.status.phase == "Error" and "drop" in late.status.message
    assert Delete("Job", "seed-fault-drop-0") in late.actions and Delete("Job", LOAD) in late.actions
    assert late.status.faults[0].result == "healed"


def test_repeating_faults_recur_every_interval_while_the_load_runs_up_to_the_cap() -> None:
    fault = {**FAULTS[0], "startAfter": "0s", "duration": "1s", "interval": "10s"}
    status, observed, raw = running([fault], pods=PODS)
    for seconds in (0, 1, 10, 11, 20, 21, 30, 40):
        decision = step(status, observed, seconds=seconds, raw=raw)
        status = decision.status
    assert [(f.name, f.result) for f in status.faults] == [
        ("kill", "healed"),
        ("kill#1", "healed"),
        ("kill#2", "healed"),
    ]  # max_fault_repeats=3


@pytest.mark.parametrize("seconds", [1, 6])  # not due yet, due
def test_a_fault_not_started_when_the_load_finished_is_skipped(seconds: float) -> None:
    status, observed, raw = running(FAULTS[:1], pods=PODS)
    decision = step(status, finish_job(observed, LOAD), seconds=seconds, raw=raw)
    assert decision.status.faults[0].result == "skipped" and of(decision, Delete) == []
    assert decision.status.phase == "Verifying"


def test_repeats_stop_when_the_load_finishes() -> None:
    fault = {**FAULTS[0], "startAfter": "0s", "duration": "1s", "interval": "10s"}
    status, observed, raw = running([fault], pods=PODS)
    for seconds in (0, 1):
        status = step(status, observed, seconds=seconds, raw=raw).status
    final = step(status, finish_job(observed, LOAD), seconds=25, raw=raw).status
    assert [(f.name, f.result) for f in final.faults] == [("kill", "healed")] and final.phase == "Verifying"


# ---------------------------------------------------------------- load and verification


def test_verification_waits_for_the_load_and_for_every_fault_to_heal() -> None:
    status, observed, raw = running(FAULTS[1:2], workloads=WORKLOADS)
    record = step(status, observed, seconds=10, raw=raw)
    done = finish_job(observed, LOAD)
    waiting = step(record.status, done, seconds=12, raw=raw)
    assert waiting.status.phase == "Running" and VERIFY not in created(waiting)
    verifying = step(record.status, done, seconds=20, raw=raw)
    assert verifying.status.phase == "Verifying" and verifying.status.faults[0].result == "healed"
    job = created(verifying)[VERIFY]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "verify",
        "/etc/fincart-chaos/chaostest.yaml",
        "--summary-file",
        "/dev/termination-log",
        "--ledger-from-nats",
        "--publish-bundle",
    ]
    assert container["terminationMessagePolicy"] == "File"
    env = {e["name"]: e for e in container["env"]}
    assert set(env) == {
        "FINCART_CHAOS_RUN_ID",
        "FINCART_DATABASE_URL",
        "FINCART_NATS_URL",
        "FINCART_NATS_PREFIX",
        "FINCART_CHAOS_FAULTS",
    }
    # the fault windows, for the verifier's coverage check
    [window] = TypeAdapter(list[FaultRecord]).validate_json(env["FINCART_CHAOS_FAULTS"]["value"])
    assert (window.name, window.result, window.started_at, window.healed_at) == (
        "pause",
        "healed",
        at(10).timestamp(),
        at(20).timestamp(),
    )
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 160  # settle 60s + 100s
    conditions = {c.type: c.status for c in verifying.status.conditions}
    assert conditions == {"LoadComplete": "True", "Verified": "Unknown"}


def test_the_runners_get_syncs_read_token_when_the_spec_names_sync() -> None:
    token = {"name": "fincart", "key": "sync-read-token"}
    target = {**spec()["target"], "syncUrl": "http://fincart-sync:8082", "syncTokenSecretRef": token}
    with_sync = TypeAdapter(ChaosTestSpec).validate_python(spec(target=target))
    for job in (children.load_job(OWNER, with_sync, SETTINGS, 60), children.verify_job(OWNER, with_sync, SETTINGS, 60)):
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["FINCART_SYNC_TOKEN"]["valueFrom"] == {"secretKeyRef": token}
    without = TypeAdapter(ChaosTestSpec).validate_python(spec())
    job = children.load_job(OWNER, without, SETTINGS, 60)
    assert "FINCART_SYNC_TOKEN" not in {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_runner_counts_come_from_the_load_job() -> None:
    status, observed, raw = running()
    fresh = step(status, observed, seconds=1, raw=raw).status.runners  # the Job exists, no pod has run yet
    assert (fresh.desired, fresh.active, fresh.succeeded, fresh.failed) == (3, 0, 0, 0)
    observed = dataclasses.replace(observed, jobs={LOAD: JobView(LOAD, active=2, succeeded=1)})
    runners = step(status, observed, seconds=1, raw=raw).status.runners
    assert (runners.desired, runners.active, runners.succeeded, runners.failed) == (3, 2, 1, 0)


@pytest.mark.parametrize(
    ("observed", "seconds", "reason"),
    [
        ({"jobs": {LOAD: JobView(LOAD, "failed", message="BackoffLimitExceeded")}}, 1, "LoadJobFailed"),
        ({"jobs": {LOAD: JobView(LOAD)}}, 600.1, "DeadlineExceeded"),
        ({"jobs": {}}, 1, "LoadJobMissing"),
    ],
)
def test_load_failures_end_in_error_with_a_reason_and_heal_the_faults(
    observed: dict, seconds: float, reason: str
) -> None:
    status, started, raw = running(FAULTS[1:2], workloads=WORKLOADS)
    status = step(status, started, seconds=10, raw=raw).status
    decision = step(status, Observed(workloads=WORKLOADS, **observed), seconds=seconds, raw=raw)
    assert decision.status.phase == "Error" and decision.status.verdict == "Error"
    assert decision.status.completion_time
    assert Scale("StatefulSet", "fincart-processor", 2) in decision.actions
    assert decision.status.faults[0].result == "healed"
    assert ("Warning", reason) in [(e.type, e.reason) for e in of(decision, Event)]
    assert (Delete("Job", LOAD) in decision.actions) == (reason == "DeadlineExceeded")


def test_the_load_may_run_for_exactly_its_deadline() -> None:
    status, started, raw = running()
    assert step(status, started, seconds=600, raw=raw).status.phase == "Running"
    assert step(status, started, seconds=600.001, raw=raw).status.phase == "Error"
    assert step(status, finish_job(started, LOAD), seconds=700, raw=raw).status.phase == "Verifying"  # done late


def verifying() -> tuple[ChaosTestStatus, Observed, dict]:
    status, observed, raw = running()
    decision = step(status, finish_job(observed, LOAD), seconds=30, raw=raw)
    return decision.status, cluster_after(finish_job(observed, LOAD), decision), raw


def test_a_pass_summary_completes_the_test_with_counts_and_a_report_config_map() -> None:
    status, observed, raw = verifying()
    text = summary()
    decision = step(status, dataclasses.replace(observed, verify_message=text), seconds=40, raw=raw)
    final = decision.status
    assert (final.phase, final.verdict, final.report_ref) == ("Completed", "Pass", "seed-report")
    assert final.message == "Pass: sent 50, stored 50, lost 0, duplicated 0"
    assert [(c.type, c.status) for c in final.conditions] == [("LoadComplete", "True"), ("Verified", "True")]
    assert [c.last_transition_time for c in final.conditions] == [
        "2026-01-01T00:00:30.000Z",
        "2026-01-01T00:00:40.000Z",
    ]
    assert (final.counts.sent, final.counts.stored, final.counts.lost) == (50, 50, 0)
    assert final.completion_time == "2026-01-01T00:00:40.000Z"
    report = created(decision)["seed-report"]
    assert json.loads(report["data"]["summary.json"])["verdict"] == "Pass"
    assert report["metadata"]["labels"]["chaos.fincart.io/role"] == "report"
    assert of(decision, Delete) == []  # the verify Job's pod keeps its logs
    assert [(e.type, e.reason) for e in of(decision, Event)] == [("Normal", "Completed")]
    again = step(
        status,
        dataclasses.replace(observed, report=text, config_maps=observed.config_maps | {"seed-report"}),
        seconds=41,
        raw=raw,
    )
    assert again.status.phase == "Completed" and of(again, Create) == []  # after a restart: the ConfigMap is enough


def test_a_fail_summary_fails_the_test_with_the_anomalies() -> None:
    status, observed, raw = verifying()
    anomalies = [{"invariant": "I1", "message": "acked but not stored", "count": 2, "samples": ["w1", "w2"]}]
    text = summary("Fail", counts={"lost": 2, "stored": 48}, anomalies=anomalies)
    decision = step(status, dataclasses.replace(observed, verify_message=text), seconds=40, raw=raw)
    final = decision.status
    assert (final.phase, final.verdict, final.counts.lost) == ("Failed", "Fail", 2)
    assert [(a.invariant, a.count, a.samples) for a in final.anomalies] == [("I1", 2, ["w1", "w2"])]
    assert "I1 x2" in final.message
    assert {c.type: (c.status, c.reason) for c in final.conditions}["Verified"] == ("False", "Fail")
    assert [(e.type, e.reason) for e in of(decision, Event)] == [("Warning", "Failed")]


def test_an_unreadable_summary_is_quoted_up_to_1000_characters() -> None:
    status, observed, raw = verifying()
    text = summary(anomalies=[{"invariant": n} for n in range(40)])  # 40 errors, each with its input
    decision = step(status, dataclasses.replace(observed, verify_message=text), seconds=40, raw=raw)
    assert decision.status.phase == "Error" and len(decision.status.message or "") == 1000


@pytest.mark.parametrize(
    ("change", "seconds", "reason"),
    [
        ({"verify_message": summary("Error", reason="database unreachable")}, 40, "Error"),
        ({"verify_message": "{not json"}, 40, "SummaryUnreadable"),
        ({"jobs": {VERIFY: JobView(VERIFY, "failed", message="DeadlineExceeded")}}, 40, "VerifyJobFailed"),
        ({"jobs": {VERIFY: JobView(VERIFY, "succeeded")}}, 40, "VerifyJobFailed"),  # done, but no summary
        ({"jobs": {}}, 40, "VerifyJobMissing"),
        ({}, 30 + 160.1, "DeadlineExceeded"),
    ],
)
def test_verification_problems_end_in_error(change: dict, seconds: float, reason: str) -> None:
    status, observed, raw = verifying()
    decision = step(status, dataclasses.replace(observed, **change), seconds=seconds, raw=raw)
    assert decision.status.phase == "Error" and decision.status.verdict == "Error"
    assert [e.reason for e in of(decision, Event)] == [reason]
    assert (Delete("Job", VERIFY) in decision.actions) == (reason == "DeadlineExceeded")
    assert {c.type: c.status for c in decision.status.conditions} == {"LoadComplete": "True", "Verified": "False"}


def test_the_verification_may_run_for_exactly_its_deadline() -> None:
    status, observed, raw = verifying()  # since 30 s, for up to settle.timeout (60 s) + 100 s
    assert step(status, observed, seconds=31, raw=raw).status.phase == "Verifying"
    assert step(status, observed, seconds=30 + 160, raw=raw).status.phase == "Verifying"


# ---------------------------------------------------------------- abort, deletion, cleanup


@pytest.mark.parametrize("how", ["abort", "delete"])
def test_abort_and_deletion_stop_the_load_and_heal_every_fault(how: str) -> None:
    status, observed, raw = running(FAULTS, pods=PODS, workloads=WORKLOADS)
    for seconds in (5, 10, 10):
        decision = step(status, observed, seconds=seconds, raw=raw)
        status, observed = decision.status, cluster_after(observed, decision)
    assert {f.name: f.result for f in status.faults} == {"kill": "healed", "pause": "injected", "drop": "injected"}
    if how == "abort":
        raw = {**raw, "abort": True}
    else:
        observed = dataclasses.replace(observed, deleting=True)
    stop = step(status, observed, seconds=12, raw=raw)
    assert stop.status.phase == "Aborted" and stop.status.verdict is None
    events = [(e.type, e.reason) for e in of(stop, Event)]
    assert events == [("Normal", "FaultHealed"), ("Normal", "FaultHealed"), ("Warning", "Aborted")]  # kill was healed
    assert set(of(stop, Scale)) == {Scale("StatefulSet", "fincart-processor", 2), Scale("Deployment", "fincart-x", 1)}
    assert set(of(stop, Delete)) == {Delete("Job", "seed-fault-drop-0"), Delete("Job", LOAD)}
    assert all(f.result == "healed" for f in stop.status.faults)
    assert stop.status.faults[1].healed_at == "2026-01-01T00:00:12.000Z"
    assert [(c.type, c.status) for c in stop.status.conditions] == [("LoadComplete", "False")]  # never verifying


def test_abort_leaves_a_skipped_fault_skipped() -> None:
    status, observed, raw = running(FAULTS[:1], pods=PODS)
    verifying = step(status, finish_job(observed, LOAD), seconds=1, raw=raw)
    assert verifying.status.phase == "Verifying" and verifying.status.faults[0].result == "skipped"
    stop = step(verifying.status, finish_job(observed, LOAD), seconds=2, raw={**raw, "abort": True})
    assert stop.status.faults[0].result == "skipped" and "FaultHealed" not in [e.reason for e in of(stop, Event)]
    assert of(stop, Delete) == []  # the load Job is done: nothing to stop


def test_a_skipped_fault_stays_skipped_while_another_is_held() -> None:
    pause = {**FAULTS[1], "startAfter": "5s", "duration": "10s"}
    drop = {**FAULTS[2], "startAfter": "8s"}
    status, observed, raw = running([pause, drop], workloads=WORKLOADS)
    status = step(status, observed, seconds=5, raw=raw).status
    done = finish_job(observed, LOAD)
    status = step(status, done, seconds=6, raw=raw).status  # the load finished before drop started
    assert {f.name: f.result for f in status.faults} == {"pause": "injected", "drop": "skipped"}
    assert status.faults[1].started_at is None
    later = step(status, done, seconds=9, raw=raw)
    assert later.status.phase == "Running" and later.status.faults[1].result == "skipped"


def test_abort_before_anything_started() -> None:
    decision = step(ChaosTestStatus(), Observed(finalized=False), raw=spec(abort=True))
    assert decision.status.phase == "Aborted" and of(decision, Create) == []


def finished(phase: str, policy: str) -> tuple[ChaosTestStatus, Observed, dict]:
    raw = spec(cleanup={"policy": policy, "ttlSecondsAfterFinished": 60})
    status = ChaosTestStatus(phase=phase, start_time="2026-01-01T00:00:00Z", completion_time="2026-01-01T00:01:00Z")
    for kind in ("LoadComplete", "Verified"):
        status.conditions.append(Condition(type=kind, status="True", reason="r", message="m", last_transition_time="t"))
    observed = Observed(
        jobs={LOAD: JobView(LOAD, "succeeded"), VERIFY: JobView(VERIFY, "succeeded")},
        config_maps=frozenset({"seed-spec", "seed-report"}),
    )
    return status, observed, raw


def test_cleanup_deletes_the_runner_children_after_the_ttl_and_keeps_the_report() -> None:
    status, observed, raw = finished("Completed", "OnSuccess")
    early = step(status, observed, seconds=100, raw=raw)
    assert early.actions == [] and early.wait_s == 20
    clean = step(status, observed, seconds=120, raw=raw)
    assert set(of(clean, Delete)) == {Delete("Job", LOAD), Delete("Job", VERIFY), Delete("ConfigMap", "seed-spec")}
    assert clean.wait_s is None
    assert [(c.type, c.status) for c in clean.status.conditions] == [
        ("LoadComplete", "True"),
        ("Verified", "True"),
        ("CleanedUp", "True"),
    ]
    assert of(step(status, observed, seconds=150, raw=raw), Delete) == of(clean, Delete)  # a late look cleans too
    assert step(clean.status, observed, seconds=200, raw=raw).actions == []
    assert not needs_attention(raw, clean.status.model_dump(by_alias=True))


@pytest.mark.parametrize(
    ("phase", "policy", "cleaned"),
    [
        ("Failed", "OnSuccess", False),
        ("Error", "OnSuccess", False),
        ("Aborted", "OnSuccess", False),
        ("Failed", "Always", True),
        ("Completed", "Never", False),
    ],
)
def test_cleanup_policy(phase: str, policy: str, cleaned: bool) -> None:
    status, observed, raw = finished(phase, policy)
    assert needs_attention(raw, status.model_dump(by_alias=True)) == cleaned
    assert bool(of(step(status, observed, seconds=120, raw=raw), Delete)) == cleaned


def test_a_finished_test_whose_spec_no_longer_parses_is_left_alone() -> None:
    status, observed, _ = finished("Completed", "Always")
    decision = step(status, observed, seconds=120, raw=spec(load="bogus"))
    assert (decision.actions, decision.wait_s) == ([], None)


def test_a_running_test_needs_the_operator() -> None:
    assert needs_attention(spec(), None) and needs_attention(spec(), {"phase": "Verifying", "kopf": {}})
    assert not needs_attention(spec(load="bogus"), {"phase": "Completed"})  # no cleanup to read from it


# ---------------------------------------------------------------- deadlines, edges, metrics


def test_the_load_deadline_is_estimated_from_the_spec_unless_configured() -> None:
    estimated = OperatorSettings(load_startup_s=100, load_assumed_rate=50)
    paced = ChaosTestSpec.model_validate(
        spec(
            load={
                "orders": 1000,
                "updatesPerOrder": 10,
                "parallelism": 2,
                "rate": 100,
                "duplicateRatio": 0.1,
                "invalidSignatureRatio": 0.2,
            }
        )
    )
    assert load_deadline(paced, estimated) == pytest.approx(100 + 2 * 6500 / 100)
    unpaced = paced.model_copy(update={"load": paced.load.model_copy(update={"rate": 0})})
    assert load_deadline(unpaced, estimated) == pytest.approx(100 + 2 * 6500 / 50)
    assert load_deadline(unpaced, OperatorSettings(load_deadline_max_s=60)) == 60
    assert load_deadline(unpaced, SETTINGS) == 600


def test_job_views_and_the_verifier_summary_from_api_objects() -> None:
    def job(*conditions: dict) -> dict:
        return {"metadata": {"name": "j"}, "status": {"active": 1, "conditions": list(conditions)}}

    assert job_view(job()).outcome == "running"
    assert job_view(job({"type": "SuccessCriteriaMet", "status": "True"})).outcome == "running"
    assert job_view(job({"type": "Complete", "status": "True"})).outcome == "succeeded"
    failed = job_view(job({"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}))
    assert (failed.outcome, failed.message, failed.active) == ("failed", "DeadlineExceeded", 1)
    pods = [
        {
            "metadata": {"creationTimestamp": ts},
            "status": {"containerStatuses": [{"state": {"terminated": {"message": msg}}}]},
        }
        for ts, msg in (("2026-01-01T00:00:00Z", "old"), ("2026-01-01T00:01:00Z", "new"))
    ]
    assert termination_message(pods) == "new" and termination_message([]) is None
    items = [{"metadata": {"ownerReferences": [{"uid": u}]}} for u in ("a", "b")]
    assert owned(items, "b") == items[1:]


def test_a_restore_annotation_that_is_not_ours_is_ignored() -> None:
    restore = Restore(2, "chaos/seed", "u")
    assert Restore.parse(restore.text()) == restore
    assert [Restore.parse(t) for t in (None, "not json", '{"replicas": 2}', "[2]", '{"replicas": "two"}')] == [None] * 5


def test_names_of_the_children() -> None:
    assert children.fault_job_name("seed", "drop", 2) == "seed-fault-drop-2"
    assert children.selector({"b": "2", "a": "1"}) == "a=1,b=2"


def test_metrics_count_fault_outcomes_and_finished_runs_once() -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample("chaostest_runs_total", verdict="Fail"),
        sample("chaostest_invariant_violations_total", invariant="I1"),
        sample("chaostest_fault_injections_total", type="podKill", result="injected"),
        sample("chaostest_webhooks_sent_total"),
        sample("chaostest_duration_seconds_count"),
    )
    status, observed, raw = running(FAULTS[:1], pods=PODS)
    inject = step(status, observed, seconds=5, raw=raw)
    metrics.record(status, inject.status)
    metrics.record(inject.status, inject.status)
    failed = ChaosTestStatus.model_validate(
        {
            **inject.status.model_dump(),
            "phase": "Failed",
            "verdict": "Fail",
            "completion_time": "2026-01-01T00:02:00Z",
            "counts": {"sent": 40},
            "anomalies": [{"invariant": "I1", "message": "m", "count": 3}],
        }
    )
    metrics.record(inject.status, failed)
    metrics.record(failed, failed)
    after = (
        sample("chaostest_runs_total", verdict="Fail"),
        sample("chaostest_invariant_violations_total", invariant="I1"),
        sample("chaostest_fault_injections_total", type="podKill", result="injected"),
        sample("chaostest_webhooks_sent_total"),
        sample("chaostest_duration_seconds_count"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 3, 1, 40, 1]
    metrics.track("chaos/a", inject.status)
    assert sample("chaostest_active") >= 1
    metrics.track("chaos/a", failed)
    assert sample("chaostest_active") == 0


# ------------------------------------------------ safety: scale conflicts, restore annotation, kill switch


PAUSE = {
    "name": "pause",
    "type": "processorPause",
    "selector": {"app.kubernetes.io/component": "processor"},
    "startAfter": "10s",
    "duration": "10s",
}


@pytest.mark.parametrize(
    ("other", "conflict"),
    [
        ({"selector": {"app.kubernetes.io/component": "processor"}, "startAfter": "15s"}, True),  # same, overlapping
        ({"selector": {}, "startAfter": "15s"}, True),  # selects everything, the processor too
        (
            {
                "selector": {"app.kubernetes.io/component": "processor", "x": "y"},
                "startAfter": "0s",
                "interval": "30s",
                "duration": "5s",
            },
            True,
        ),  # a narrower selector, repeating: may hit it at any time
        ({"selector": {"app.kubernetes.io/component": "processor"}, "startAfter": "20s"}, False),  # one after the other
        ({"selector": {"app.kubernetes.io/component": "processor"}, "startAfter": "0s"}, False),  # ends as it starts
        ({"selector": {"app.kubernetes.io/component": "processor"}, "startAfter": "30s"}, False),  # well after
        ({"selector": {"app.kubernetes.io/component": "processor"}, "startAfter": "0s", "duration": "5s"}, False),
        ({"selector": {"app.kubernetes.io/component": "processor"}, "startAfter": "3s", "duration": "5s"}, False),
        ({"selector": {"app.kubernetes.io/component": "nats"}, "startAfter": "15s"}, False),  # sorts before
        ({"selector": {"app.kubernetes.io/component": "redis"}, "startAfter": "15s"}, False),  # another workload
    ],
)
def test_two_scale_faults_on_one_workload_at_once_are_rejected(other: dict[str, Any], conflict: bool) -> None:
    second = {"name": "again", "type": "redisOutage", "duration": "10s", **other}
    decision = step(ChaosTestStatus(), raw=spec(faults=[PAUSE, second]))
    if conflict:
        assert decision.status.phase == "Error" and "spec.faults[1]: again may scale the same workload as pause" in (
            decision.status.message or ""
        )
        assert of(decision, Create) == []
    else:
        assert decision.status.phase == "Running", decision.status.message


def test_a_scale_fault_writes_the_replicas_on_the_workload_once_and_removes_them_when_healed() -> None:
    status, observed, raw = running(FAULTS[1:2], workloads=WORKLOADS)
    record = step(status, observed, seconds=10, raw=raw)
    written = of(record, Annotate)
    assert [(a.kind, a.name, a.key) for a in written] == [
        ("StatefulSet", "fincart-processor", RESTORE_ANNOTATION),
        ("Deployment", "fincart-x", RESTORE_ANNOTATION),
    ]
    assert Restore.parse(written[0].value) == Restore(2, "chaos/seed", OWNER.uid)
    heal = step(record.status, observed, seconds=20, raw=raw)
    assert of(heal, Annotate) == [
        Annotate("StatefulSet", "fincart-processor", RESTORE_ANNOTATION, None),
        Annotate("Deployment", "fincart-x", RESTORE_ANNOTATION, None),
    ]
    # the annotation comes after the scale: a crash in between leaves it, and with it the count
    assert [type(a) for a in heal.actions[:2]] == [Scale, Annotate]


def test_a_workload_left_at_0_is_restored_to_its_annotated_count_not_to_0() -> None:
    left = Workload("StatefulSet", "fincart-processor", 0, Restore(2, "chaos/old", "dead-uid"))
    status, observed, raw = running(FAULTS[1:2], workloads={"pause": (left,)})
    record = step(status, observed, seconds=10, raw=raw)
    assert of(record, Annotate) == []  # set once: the first value stays
    assert restore_targets(record.status.faults[0].message) == [Workload("StatefulSet", "fincart-processor", 2)]


def test_workloads_of_tests_that_are_gone_or_finished_are_healed() -> None:
    def held(name: str, test: str, uid: str) -> tuple[str, Workload]:
        return "chaos", Workload("StatefulSet", name, 0, Restore(3, test, uid))

    tests = {
        ("chaos", "alive"): ("uid-1", "Running"),
        ("chaos", "done"): ("uid-2", "Completed"),
        ("chaos", "reborn"): ("uid-new", "Running"),
        ("chaos", "renewed"): ("uid-9", "Running"),  # recreated too, its uid sorting after the old one
    }
    found = [
        ("chaos", Workload("Deployment", "plain", 1)),  # no fault holds it
        held("a", "chaos/alive", "uid-1"),
        held("b", "chaos/done", "uid-2"),
        held("c", "chaos/gone", "uid-3"),
        held("d", "chaos/reborn", "uid-old"),
        held("e", "chaos/renewed", "uid-0"),
    ]
    heal = orphaned_restores(found, tests)
    assert heal == {
        "chaos": [
            action
            for name in ("b", "c", "d", "e")
            for action in (Scale("StatefulSet", name, 3), Annotate("StatefulSet", name, RESTORE_ANNOTATION, None))
        ]
    }


def test_the_kill_switch_aborts_running_tests_and_heals_their_faults() -> None:
    status, observed, raw = running(FAULTS, pods=PODS, workloads=WORKLOADS)
    for seconds in (5, 10, 10):
        decision = step(status, observed, seconds=seconds, raw=raw)
        status, observed = decision.status, cluster_after(observed, decision)
    killed = decide(OWNER, raw, status, observed, at(12), SETTINGS.model_copy(update={"kill_switch": True}))
    assert killed.status.phase == "Aborted" and "kill switch" in (killed.status.message or "")
    assert {c.type: c.reason for c in killed.status.conditions}["LoadComplete"] == "KillSwitch"
    assert set(of(killed, Scale)) == {Scale("StatefulSet", "fincart-processor", 2), Scale("Deployment", "fincart-x", 1)}
    assert Delete("Job", LOAD) in of(killed, Delete) and all(f.result == "healed" for f in killed.status.faults)
    fresh = decide(OWNER, spec(), ChaosTestStatus(), Observed(), T0, SETTINGS.model_copy(update={"kill_switch": True}))
    assert fresh.status.phase == "Aborted" and of(fresh, Create) == []  # nothing new starts


# ---------------------------------------------------------------- the fault types of issue 12

PROXIED = SETTINGS.model_copy(update={"proxy_url": "http://fincart-fault-proxy:8474"})
NETWORK = {
    "name": "hole",
    "type": "network",
    "startAfter": "5s",
    "duration": "3s",
    "network": {"target": {"service": "processor", "upstream": "nats"}, "mode": "blackhole"},
}


def proxied_step(status: ChaosTestStatus, observed: Observed, seconds: float, raw: dict[str, Any]) -> Decision:
    return decide(OWNER, raw, status, observed, at(seconds), PROXIED)


def test_rescale_holds_the_workload_at_its_replicas_and_restores_it() -> None:
    rescale = {
        "name": "pause",
        "type": "rescale",
        "replicas": 3,
        "selector": {"app.kubernetes.io/component": "processor"},
        "startAfter": "10s",
        "duration": "10s",
    }
    status, observed, raw = running([rescale], workloads={"pause": WORKLOADS["pause"][:1]})
    record = step(status, observed, seconds=10, raw=raw)
    assert record.status.faults[0].message == "scaled to 3; restore StatefulSet/fincart-processor=2"
    hold = step(record.status, observed, seconds=10.1, raw=raw)
    assert of(hold, Scale) == [Scale("StatefulSet", "fincart-processor", 3)]
    observed = cluster_after(observed, hold)
    assert step(record.status, observed, seconds=15, raw=raw).actions == []  # held at 3
    heal = step(record.status, observed, seconds=20, raw=raw)
    assert of(heal, Scale) == [Scale("StatefulSet", "fincart-processor", 2)]
    aborted = step(record.status, observed, seconds=12, raw={**raw, "abort": True})
    assert of(aborted, Scale) == [Scale("StatefulSet", "fincart-processor", 2)]


def test_pause_is_a_scale_to_zero_in_a_cluster() -> None:
    pause = {**FAULTS[1], "type": "pause"}
    status, observed, raw = running([pause], workloads=WORKLOADS)
    record = step(status, observed, seconds=10, raw=raw)
    hold = step(record.status, observed, seconds=10.1, raw=raw)
    assert of(hold, Scale) == [Scale("StatefulSet", "fincart-processor", 0), Scale("Deployment", "fincart-x", 0)]


@pytest.mark.parametrize(
    ("nodes", "killed"), [("one", ["fincart-nats-0"]), ("all", ["fincart-nats-0", "fincart-nats-1", "fincart-nats-2"])]
)
def test_broker_node_loss_kills_one_or_all_nats_pods_without_grace(nodes: str, killed: list[str]) -> None:
    loss = {
        "name": "kill",
        "type": "brokerNodeLoss",
        "nodes": nodes,
        "selector": {"app.kubernetes.io/component": "nats"},
        "startAfter": "5s",
        "duration": "2s",
    }
    status, observed, raw = running([loss], pods={"kill": ("fincart-nats-0", "fincart-nats-1", "fincart-nats-2")})
    decision = step(status, observed, seconds=5, raw=raw)
    assert of(decision, Delete) == [Delete("Pod", pod, grace_period_s=0) for pod in killed]
    assert decision.status.faults[0].message.startswith(f"killed (grace 0) {len(killed)} pod(s)")
    assert step(decision.status, observed, seconds=7, raw=raw).status.faults[0].result == "healed"


def test_network_faults_are_set_and_cleared_through_the_proxy_on_schedule() -> None:
    raw = spec(faults=[NETWORK])
    start = proxied_step(ChaosTestStatus(), Observed(), 0, raw)
    observed = cluster_after(Observed(), start)
    assert of(proxied_step(start.status, observed, 4.9, raw), ProxyCall) == []
    inject = proxied_step(start.status, observed, 5, raw)
    (put,) = of(inject, ProxyCall)
    assert put.name == "seed-hole-0" and put.body is not None
    assert (put.body["route"], put.body["mode"], put.body["probability"]) == ("processor-nats", "blackhole", 1.0)
    assert "bytesPerSecond" in put.body  # the proxy's API is camelCase, like the spec
    assert inject.status.faults[0].message == "blackhole on processor-nats via the fault proxy"
    assert of(proxied_step(inject.status, observed, 7.9, raw), ProxyCall) == []
    heal = proxied_step(inject.status, observed, 8, raw)
    assert of(heal, ProxyCall) == [ProxyCall("seed-hole-0")] and heal.status.faults[0].result == "healed"
    aborted = proxied_step(inject.status, observed, 6, {**raw, "abort": True})
    assert of(aborted, ProxyCall) == [ProxyCall("seed-hole-0")] and aborted.status.phase == "Aborted"


def test_network_faults_without_a_fault_proxy_are_an_invalid_spec() -> None:
    decision = step(ChaosTestStatus(), raw=spec(faults=[NETWORK]))
    assert decision.status.phase == "Error" and "chaosProxy.enabled" in (decision.status.message or "")


def test_a_random_schedule_runs_the_drawn_faults_one_after_another() -> None:
    raw = spec(faults=FAULTS[:1], schedule={"seed": 4, "span": "60s", "rate": 30, "quiet": "1s"})
    drawn = ChaosTestSpec.model_validate(raw).scheduled_faults()
    assert len(drawn) >= 2 and all(f.name.startswith("kill-") for f in drawn)
    status, observed, raw = running(FAULTS[:1], pods={f.name: PODS["kill"] for f in drawn})
    raw = spec(faults=FAULTS[:1], schedule={"seed": 4, "span": "60s", "rate": 30, "quiet": "1s"})
    first = parse_duration(drawn[0].start_after)
    decision = step(status, observed, seconds=first, raw=raw)
    assert [f.name for f in decision.status.faults] == [drawn[0].name]
    assert of(decision, Delete) == [Delete("Pod", p) for p in PODS["kill"]]
