"""The operator under kopf's real runtime against kmock, a fake Kubernetes API server (no cluster needed).

The test plays the cluster's controllers: it marks Jobs complete through the API and writes the verifier's
termination message into a pod, the way the Job controller and the kubelet would; the operator does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import jsonpatch
import kmock
import kopf
import kubernetes
import pytest
import yaml
from fincart_chaos.proxy import Route, serve
from fincart_devstack.localstack import free_port
from fincart_operator import main  # noqa: F401  (registers the handlers with kopf)
from fincart_operator.crd import build_crd
from fincart_operator.settings import OperatorSettings

NS = "chaos"
CHAOSTESTS = "chaos.fincart.io/v1alpha1/chaostests"
JOBS, PODS, CONFIGMAPS = "batch/v1/jobs", "v1/pods", "v1/configmaps"
DEPLOYMENTS, STATEFULSETS = "apps/v1/deployments", "apps/v1/statefulsets"
FINALIZER = "chaos.fincart.io/cleanup"
T = TypeVar("T")


class Cluster(kmock.KubernetesEmulator):
    """kmock's emulator plus what kopf and the operator rely on from a real API server: uid, resourceVersion,
    generation and creationTimestamp stamps, the namespace from the URL, generateName, label selectors on lists,
    and 422 when a JSON patch's `test` op fails (kopf's optimistic concurrency)."""

    _versions = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            if "generateName" in meta and "name" not in meta:
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(next(self._versions)),
                generation=1,
                creationTimestamp=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            )
        elif request.resource is not None and request.action == kmock.action.UPDATE and request.name:
            key = (request.resource, request.namespace, request.name)
            current = self.objects[key].raw if key in self.objects and not self.objects[key].deleted else {}
            version = str(next(self._versions))
            if isinstance(request.data, list):  # JSON patch
                for op in [op for op in request.data if op.get("op") == "test"]:
                    try:
                        jsonpatch.apply_patch(current, [op])
                    except jsonpatch.JsonPatchException as exc:
                        raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc
                    request.data.remove(op)
                request.data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
            elif isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                meta["resourceVersion"] = version
                if "spec" in request.data and request.subresource is None:
                    meta["generation"] = current.get("metadata", {}).get("generation", 0) + 1
        return await super()._handle(request)

    async def _serve_list(self, request: kmock.Request) -> Any:
        answer = await super()._serve_list(request)
        wanted = dict(p.split("=", 1) for p in request.params.get("labelSelector", "").split(",") if p)
        answer["items"] = [
            i for i in answer["items"] if wanted.items() <= (i.get("metadata", {}).get("labels") or {}).items()
        ]
        return answer


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    async with Cluster() as k8s, kmock.Server(k8s):
        crd = build_crd()
        names, version = crd["spec"]["names"], crd["spec"]["versions"][0]
        k8s.resources[CHAOSTESTS] = kmock.ResourceInfo(
            kind=names["kind"],
            singular=names["singular"],
            shortnames=set(names["shortNames"]),
            namespaced=True,
            subresources=set(version["subresources"]),
            verbs={"get", "list", "watch", "create", "patch", "delete"},
        )
        k8s.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False)  # kopf discovers it
        for resource, kind, sub in (
            (JOBS, "Job", {"status"}),
            (PODS, "Pod", set()),
            (CONFIGMAPS, "ConfigMap", set()),
            (DEPLOYMENTS, "Deployment", {"scale"}),
            (STATEFULSETS, "StatefulSet", {"scale"}),
            ("v1/events", "Event", set()),
        ):
            k8s.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=True, subresources=sub)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "current-context": "kmock",
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": NS}}],
                    "clusters": [{"name": "kmock", "cluster": {"server": str(k8s.url).rstrip("/")}}],
                    "users": [{"name": "kmock", "user": {"token": "kmock-token"}}],
                }
            )
        )
        # the operator's kubernetes client configuration (and so its @kopf.on.login) reads it; the client takes
        # KUBECONFIG once, at import
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        yield k8s


def settings(**changes: Any) -> OperatorSettings:
    return OperatorSettings(
        watch_namespace=NS,
        http_port=0,
        poll_interval_s=0.05,
        runner_image="fincart-chaos:e2e",
        **{"chaos_allow_db_faults": True, **changes},
    )


@contextlib.asynccontextmanager
async def operator(config: OperatorSettings) -> AsyncIterator[kopf.Memo]:
    """kopf's whole runtime (login, discovery, watching, daemons, Events) in this event loop."""
    stop, ready = asyncio.Event(), asyncio.Event()
    memo = kopf.Memo(config=config)
    task = asyncio.create_task(kopf.operator(namespaces=[NS], memo=memo, stop_flag=stop, ready_flag=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield memo
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def eventually(check: Callable[[], T | Awaitable[T]], timeout: float = 60) -> T:
    """Wait until ``check`` returns something truthy (and return it). The bound is generous: on a busy 2-core
    machine running the suite in parallel, the operator's 2 s steps can fall far behind."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(0.02)


def get(k8s: Cluster, resource: str, name: str) -> dict[str, Any] | None:
    key = (kmock.resource(resource), NS, name)
    return None if key not in k8s.objects or k8s.objects[key].deleted else k8s.objects[key].raw


def names(k8s: Cluster, resource: str) -> set[str]:
    return {
        name
        for res, ns, name in k8s.objects
        if res == kmock.resource(resource) and ns == NS and not k8s.objects[res, ns, name].deleted
    }


def status(k8s: Cluster, name: str) -> dict[str, Any]:
    return (get(k8s, CHAOSTESTS, name) or {}).get("status") or {}


def chaostest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos.fincart.io/v1alpha1",
        "kind": "ChaosTest",
        "metadata": {"name": name},
        "spec": {
            "target": {
                "ingestUrl": "http://fincart-ingest:8080",
                "hmacSecretRef": {"name": "fincart", "key": "webhook-secret"},
                "databaseUrlSecretRef": {"name": "fincart", "key": "database-url"},
            },
            "load": {"orders": 10, "updatesPerOrder": 10, "parallelism": 4},
            **spec,
        },
    }


async def call(k8s: Cluster, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One API request as kubectl or a controller would make it. Connection: close, or kopf would wait for the
    keep-alive server task at shutdown (it treats every task started after it as its own)."""
    headers = {
        "Connection": "close",
        "Content-Type": "application/merge-patch+json" if method == "patch" else "application/json",
    }
    async with k8s.request(method, path, json=body, headers=headers) as answer:
        assert answer.status < 300, await answer.text()
        return dict(await answer.json())


def path(resource: str, name: str = "", subresource: str = "") -> str:
    ref = kmock.resource(resource)
    base = f"/api/{ref.version}" if not ref.group else f"/apis/{ref.group}/{ref.version}"
    return "/".join(p for p in (f"{base}/namespaces/{NS}/{ref.plural}", name, subresource) if p)


async def apply(k8s: Cluster, body: dict[str, Any]) -> None:
    await call(k8s, "post", path(CHAOSTESTS), body)


async def finish_job(k8s: Cluster, name: str, outcome: str = "Complete") -> None:
    """What the Job controller writes when a Job is done."""
    counts = {"succeeded": 1} if outcome == "Complete" else {"failed": 1}
    await call(
        k8s,
        "patch",
        path(JOBS, name, "status"),
        {"status": {**counts, "conditions": [{"type": outcome, "status": "True"}]}},
    )


async def verifier_reports(k8s: Cluster, test: str, summary: dict[str, Any]) -> None:
    """The verify pod terminates with the summary JSON as its termination message (the kubelet's part)."""
    job = await eventually(lambda: get(k8s, JOBS, f"{test}-verify"))
    await call(
        k8s,
        "post",
        path(PODS),
        {
            "metadata": {
                "name": f"{test}-verify-x1",
                "labels": job["spec"]["template"]["metadata"]["labels"],
                "ownerReferences": [{"kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}],
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "chaos",
                        "state": {
                            "terminated": {
                                "exitCode": 0 if summary["verdict"] == "Pass" else 1,
                                "message": json.dumps(summary),
                            }
                        },
                    }
                ]
            },
        },
    )


def seed_targets(k8s: Cluster) -> None:
    """The FinCart workloads the faults pick by label: processor and NATS StatefulSets, a Redis Deployment."""

    def put(resource: str, name: str, component: str, **body: Any) -> None:
        k8s.objects[resource, NS, name] = {
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": str(uuid.uuid4()),
                "labels": {"app.kubernetes.io/component": component},
            },
            **body,
        }

    put(STATEFULSETS, "fincart-processor", "processor", spec={"replicas": 2})
    put(STATEFULSETS, "fincart-nats", "nats", spec={"replicas": 1})
    put(DEPLOYMENTS, "fincart-redis", "redis", spec={"replicas": 1})
    for pod, component in (
        ("fincart-processor-0", "processor"),
        ("fincart-processor-1", "processor"),
        ("fincart-nats-0", "nats"),
        ("fincart-redis-5d8f", "redis"),
    ):
        put(PODS, pod, component)


def replicas(k8s: Cluster, resource: str, name: str) -> int:
    return int((get(k8s, resource, name) or {})["spec"]["replicas"])


def fault(name: str, type_: str, component: str | None = None, duration: str = "200ms") -> dict[str, Any]:
    selector = {"selector": {"app.kubernetes.io/component": component}} if component else {}
    return {"name": name, "type": type_, "startAfter": "0s", "duration": duration, **selector}


SUMMARY = {
    "verdict": "Pass",
    "counts": {"sent": 100, "acked": 100, "stored": 100},
    "bundle": "nats object store chaos-reports: abcd1234/ (fincart-chaos fetch-bundle abcd1234)",
}
ALL_FAULTS = [
    fault("kill", "podKill", "processor"),
    fault("nats", "brokerRestart", "nats"),
    fault("pause", "processorPause", "processor", "3s"),
    fault("redis", "redisOutage", "redis", "3s"),
    fault("drop", "dbConnectionDrop"),
]


# ---------------------------------------------------------------- tests


async def test_a_chaostest_runs_load_faults_and_verification_to_a_pass(cluster: Cluster) -> None:
    seed_targets(cluster)
    async with operator(settings()) as memo:
        await apply(cluster, chaostest("run", faults=ALL_FAULTS, cleanup={"ttlSecondsAfterFinished": 1}))
        test = await eventually(lambda: get(cluster, CHAOSTESTS, "run"))
        load = await eventually(lambda: get(cluster, JOBS, "run-load"))
        assert FINALIZER in (get(cluster, CHAOSTESTS, "run") or {})["metadata"]["finalizers"]
        assert (load["spec"]["completionMode"], load["spec"]["completions"], load["spec"]["parallelism"]) == (
            "Indexed",
            4,
            4,
        )
        container = load["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "fincart-chaos:e2e"
        assert container["args"] == [
            "load",
            "/etc/fincart-chaos/chaostest.yaml",
            "--runner-index",
            "$(JOB_COMPLETION_INDEX)",
            "--publish-ledger",
        ]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
        assert env == {
            "FINCART_CHAOS_RUN_ID": test["metadata"]["uid"][:8],
            "FINCART_WEBHOOK_SECRET": {"secretKeyRef": {"name": "fincart", "key": "webhook-secret"}},
            "FINCART_NATS_URL": memo.config.nats_url,
            "FINCART_NATS_PREFIX": memo.config.nats_prefix,
        }
        assert load["metadata"]["ownerReferences"][0]["uid"] == test["metadata"]["uid"]
        assert "chaostest.yaml" in (get(cluster, CONFIGMAPS, "run-spec") or {})["data"]

        # the faults, through the API: pods deleted, workloads scaled to 0, a fault Job
        await eventually(
            lambda: not {"fincart-processor-0", "fincart-processor-1", "fincart-nats-0"} & names(cluster, PODS)
        )
        assert "fincart-redis-5d8f" in names(cluster, PODS)
        await eventually(
            lambda: (
                replicas(cluster, STATEFULSETS, "fincart-processor") == 0
                and replicas(cluster, DEPLOYMENTS, "fincart-redis") == 0
            )
        )
        drop = await eventually(lambda: get(cluster, JOBS, "run-fault-drop-0"))
        assert drop["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "inject",
            "dbConnectionDrop",
            "--duration",
            "200ms",
        ]

        await finish_job(cluster, "run-fault-drop-0")
        await finish_job(cluster, "run-load")
        await verifier_reports(cluster, "run", SUMMARY)
        assert replicas(cluster, STATEFULSETS, "fincart-processor") == 2  # restored before the verification
        assert replicas(cluster, DEPLOYMENTS, "fincart-redis") == 1

        final = await eventually(
            lambda: status(cluster, "run").get("phase") in ("Completed", "Failed", "Error") and status(cluster, "run")
        )
        assert (final["phase"], final["verdict"], final["reportRef"]) == ("Completed", "Pass", "run-report"), final
        assert final["bundle"] == SUMMARY["bundle"]  # where the full evidence is
        assert (final["counts"]["sent"], final["counts"]["lost"], final["runners"]["desired"]) == (100, 0, 4)
        assert {f["name"]: f["result"] for f in final["faults"]} == {
            "kill": "healed",
            "nats": "healed",
            "pause": "healed",
            "redis": "healed",
            "drop": "healed",
        }
        assert final["observedGeneration"] == 1 and final["startTime"] and final["completionTime"]
        report = json.loads((get(cluster, CONFIGMAPS, "run-report") or {})["data"]["summary.json"])
        assert report["verdict"] == "Pass"

        # cleanup a second after the end: runner Jobs and the spec go, the report stays; then the finalizer goes
        assert get(cluster, JOBS, "run-load")
        await eventually(lambda: not names(cluster, JOBS) and names(cluster, CONFIGMAPS) == {"run-report"})
        await eventually(lambda: not (get(cluster, CHAOSTESTS, "run") or {})["metadata"].get("finalizers"))

        def reasons() -> set[str]:
            return {
                e["reason"]
                for e in (get(cluster, "v1/events", n) for n in names(cluster, "v1/events"))
                if e and e["involvedObject"]["name"] == "run"
            }

        # kopf posts Events in the background: the last one may land just after the finalizer went
        await eventually(lambda: "CleanedUp" in reasons(), timeout=20)
        assert {"Running", "FaultInjected", "FaultHealed", "Verifying", "Completed", "CleanedUp"} <= reasons()

        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{memo.http_port}"
            async with http.get(f"{base}/metrics") as answer:
                text = await answer.text()
            async with http.get(f"{base}/healthz") as answer:
                assert answer.status == 200
    # every verdict and outcome is exported at 0 from the start: these must have counted
    assert re.search(r'^chaostest_runs_total\{verdict="Pass"\} [1-9]', text, re.MULTILINE)
    assert re.search(
        r'^chaostest_fault_injections_total\{result="injected",type="processorPause"\} [1-9]', text, re.MULTILINE
    )


async def test_a_failing_verdict_lands_in_the_status_with_its_anomalies(cluster: Cluster) -> None:
    async with operator(settings()):
        await apply(cluster, chaostest("fail"))
        test = await eventually(lambda: get(cluster, CHAOSTESTS, "fail"))
        await eventually(lambda: get(cluster, JOBS, "fail-load"))
        await finish_job(cluster, "fail-load")
        await eventually(lambda: get(cluster, JOBS, "fail-verify"))
        summary = {
            "verdict": "Fail",
            "counts": {"sent": 100, "stored": 97, "lost": 3},
            "anomalies": [
                {"invariant": "I1", "message": "acked but never stored", "count": 3, "samples": ["wh-1", "wh-2"]}
            ],
        }
        # the report ConfigMap, as the verifier's result lands there
        await call(
            cluster,
            "post",
            path(CONFIGMAPS),
            {
                "metadata": {
                    "name": "fail-report",
                    "labels": {"chaos.fincart.io/test": "fail"},
                    "ownerReferences": [{"kind": "ChaosTest", "name": "fail", "uid": test["metadata"]["uid"]}],
                },
                "data": {"summary.json": json.dumps(summary)},
            },
        )
        final = await eventually(lambda: status(cluster, "fail").get("verdict") and status(cluster, "fail"))
    assert (final["phase"], final["verdict"], final["counts"]["lost"]) == ("Failed", "Fail", 3)
    assert final["anomalies"] == [
        {"invariant": "I1", "message": "acked but never stored", "count": 3, "samples": ["wh-1", "wh-2"]}
    ]
    assert get(cluster, JOBS, "fail-verify")  # kept: OnSuccess cleanup does not touch a failed run


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"faults": [{"name": "kill", "type": "podKill"}]}, "spec.faults[0].selector"),
        ({"load": {"parallelism": 0}}, "spec.load.parallelism"),
        (
            {
                "target": {
                    "ingestUrl": "http://10.0.0.1:8080",
                    "hmacSecretRef": {"name": "fincart", "key": "webhook-secret"},
                    "databaseUrlSecretRef": {"name": "fincart", "key": "database-url"},
                }
            },
            "spec.target.ingestUrl",
        ),
        (
            {"faults": [{"name": "kill", "type": "podKill", "selector": {"app.kubernetes.io/component": "operator"}}]},
            "spec.faults[0].selector",
        ),
    ],
)
async def test_an_invalid_spec_ends_in_error_without_children(cluster: Cluster, spec: dict, field: str) -> None:
    async with operator(settings()):
        await apply(cluster, chaostest("bad", **spec))
        final = await eventually(lambda: status(cluster, "bad").get("phase") == "Error" and status(cluster, "bad"))
        await eventually(lambda: not (get(cluster, CHAOSTESTS, "bad") or {})["metadata"].get("finalizers"))
    assert field in final["message"] and final["verdict"] == "Error"
    assert not names(cluster, JOBS) and not names(cluster, CONFIGMAPS)


async def run_until_faults_hold(k8s: Cluster, name: str) -> None:
    seed_targets(k8s)
    await apply(
        k8s,
        chaostest(
            name,
            faults=[
                fault("pause", "processorPause", "processor", "60s"),
                fault("drop", "dbConnectionDrop", duration="60s"),
            ],
        ),
    )
    await eventually(lambda: replicas(k8s, STATEFULSETS, "fincart-processor") == 0)
    await eventually(lambda: get(k8s, JOBS, f"{name}-fault-drop-0"))


async def test_deleting_a_running_test_stops_the_load_heals_faults_and_releases_it(cluster: Cluster) -> None:
    async with operator(settings()):
        await run_until_faults_hold(cluster, "gone")
        await call(cluster, "delete", path(CHAOSTESTS, "gone"))
        await eventually(lambda: get(cluster, CHAOSTESTS, "gone") is None)
    assert replicas(cluster, STATEFULSETS, "fincart-processor") == 2
    assert get(cluster, JOBS, "gone-fault-drop-0") is None and get(cluster, JOBS, "gone-load") is None


async def test_abort_heals_and_keeps_the_record(cluster: Cluster) -> None:
    async with operator(settings()):
        await run_until_faults_hold(cluster, "stop")
        await call(cluster, "patch", path(CHAOSTESTS, "stop"), {"spec": {"abort": True}})
        final = await eventually(lambda: status(cluster, "stop").get("phase") == "Aborted" and status(cluster, "stop"))
    assert replicas(cluster, STATEFULSETS, "fincart-processor") == 2
    assert get(cluster, JOBS, "stop-fault-drop-0") is None and get(cluster, JOBS, "stop-load") is None
    assert {f["result"] for f in final["faults"]} == {"healed"} and final["observedGeneration"] == 2


async def test_a_restarted_operator_resumes_without_duplicate_jobs(cluster: Cluster) -> None:
    seed_targets(cluster)
    spec = {"faults": [fault("pause", "processorPause", "processor", "1s")]}
    async with operator(settings()):
        await apply(cluster, chaostest("resume", **spec))
        await eventually(lambda: replicas(cluster, STATEFULSETS, "fincart-processor") == 0)
    assert replicas(cluster, STATEFULSETS, "fincart-processor") == 0  # an exiting operator leaves faults to its heir
    async with operator(settings()):
        await finish_job(cluster, "resume-load")
        await verifier_reports(cluster, "resume", SUMMARY)  # a restored processor and the verify Job come first
        assert replicas(cluster, STATEFULSETS, "fincart-processor") == 2
        final = await eventually(lambda: status(cluster, "resume").get("verdict") and status(cluster, "resume"))
    assert final["phase"] == "Completed"
    creates = [
        r.data["metadata"]["name"]
        for r in cluster
        if r.action == kmock.action.CREATE and r.resource == kmock.resource(JOBS)
    ]
    assert sorted(creates) == ["resume-load", "resume-verify"]


async def test_a_load_job_that_never_finishes_ends_in_error_at_the_deadline(cluster: Cluster) -> None:
    async with operator(settings(load_deadline_s=1)):
        await apply(cluster, chaostest("slow"))
        await eventually(lambda: get(cluster, JOBS, "slow-load"))
        final = await eventually(lambda: status(cluster, "slow").get("phase") == "Error" and status(cluster, "slow"))
        await eventually(lambda: get(cluster, JOBS, "slow-load") is None)
    assert "did not finish within 1s" in final["message"]
    assert {c["type"]: c["reason"] for c in final["conditions"]}["LoadComplete"] == "DeadlineExceeded"


async def test_a_test_deleted_while_the_operator_was_down_is_still_healed(cluster: Cluster) -> None:
    seed_targets(cluster)
    async with operator(settings()):
        await apply(cluster, chaostest("orphan", faults=[fault("pause", "processorPause", "processor", "60s")]))
        await eventually(lambda: replicas(cluster, STATEFULSETS, "fincart-processor") == 0)
    processor = get(cluster, STATEFULSETS, "fincart-processor") or {}
    assert json.loads(processor["metadata"]["annotations"]["chaos.fincart.io/restore"])["replicas"] == 2
    # while the operator is down, someone removes the finalizer and deletes the test: its status is gone
    await call(cluster, "patch", path(CHAOSTESTS, "orphan"), {"metadata": {"finalizers": None}})
    await call(cluster, "delete", path(CHAOSTESTS, "orphan"))
    await eventually(lambda: get(cluster, CHAOSTESTS, "orphan") is None)
    assert replicas(cluster, STATEFULSETS, "fincart-processor") == 0
    async with operator(settings()):  # the workload itself says what to restore
        await eventually(lambda: replicas(cluster, STATEFULSETS, "fincart-processor") == 2)
        await eventually(
            lambda: (
                not ((get(cluster, STATEFULSETS, "fincart-processor") or {})["metadata"].get("annotations") or {}).get(
                    "chaos.fincart.io/restore"
                )
            )
        )


async def test_the_kill_switch_aborts_and_heals_every_running_test(cluster: Cluster) -> None:
    async with operator(settings()):
        await run_until_faults_hold(cluster, "one")
        await apply(cluster, chaostest("two"))
        await eventually(lambda: get(cluster, JOBS, "two-load"))
    async with operator(settings(kill_switch=True)):  # e.g. kubectl set env deployment/... FINCART_KILL_SWITCH=true
        for name in ("one", "two"):
            await eventually(lambda name=name: status(cluster, name).get("phase") == "Aborted")  # type: ignore[misc]
        await eventually(lambda: replicas(cluster, STATEFULSETS, "fincart-processor") == 2)
    assert get(cluster, JOBS, "one-load") is None and get(cluster, JOBS, "two-load") is None
    assert get(cluster, JOBS, "one-fault-drop-0") is None
    assert "kill switch" in status(cluster, "one")["message"]


# ---------------------------------------------------------------- the fault types of issue 12
# A real fault proxy (fincart-chaos's, in this event loop) plays the chart's proxy Deployment: the operator
# sets and clears network faults over its HTTP API.


@contextlib.asynccontextmanager
async def fault_proxy() -> AsyncIterator[tuple[str, Callable[[], Awaitable[set[str]]]]]:
    """(the control URL, a call listing the faults set now)."""
    control = free_port()
    ready, stop = asyncio.Event(), asyncio.Event()
    route = Route("processor-nats", "127.0.0.1", free_port(), "127.0.0.1", free_port())  # nothing connects
    task = asyncio.create_task(serve([route], "127.0.0.1", control, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 10)
    url = f"http://127.0.0.1:{control}"

    async def faults() -> set[str]:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/faults") as answer:
            return set((await answer.json())["faults"])

    try:
        yield url, faults
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def seed_nats_cluster(k8s: Cluster) -> None:
    seed_targets(k8s)
    for pod in ("fincart-nats-1", "fincart-nats-2"):
        k8s.objects[PODS, NS, pod] = {
            "metadata": {
                "name": pod,
                "namespace": NS,
                "uid": str(uuid.uuid4()),
                "labels": {"app.kubernetes.io/component": "nats"},
            }
        }


HOLE = {
    "name": "hole",
    "type": "network",
    "startAfter": "0s",
    "duration": "1s",
    "network": {"target": {"service": "processor", "upstream": "nats"}, "mode": "blackhole"},
}
NEW_FAULTS = [
    {**fault("scale", "rescale", "processor", "1s"), "replicas": 3},
    {**fault("node", "brokerNodeLoss", "nats"), "nodes": "one"},
    fault("freeze", "pause", "redis", "1s"),
    HOLE,
]


async def test_new_fault_types_are_set_and_healed_on_schedule(cluster: Cluster) -> None:
    seed_nats_cluster(cluster)
    async with fault_proxy() as (url, proxy_faults), operator(settings(proxy_url=url)):
        await apply(cluster, chaostest("new", faults=NEW_FAULTS))
        await eventually(
            lambda: (
                replicas(cluster, STATEFULSETS, "fincart-processor") == 3
                and replicas(cluster, DEPLOYMENTS, "fincart-redis") == 0
            )
        )
        assert await eventually(proxy_faults) == {"new-hole-0"}
        await eventually(lambda: "fincart-nats-0" not in names(cluster, PODS))
        assert {"fincart-nats-1", "fincart-nats-2"} <= names(cluster, PODS)  # one node of three
        killed = [r for r in cluster if r.action == kmock.action.DELETE and r.resource == kmock.resource(PODS)]
        assert [(r.name, r.params.get("gracePeriodSeconds")) for r in killed] == [("fincart-nats-0", "0")]
        # healed at the end of their windows, while the load still runs
        await eventually(
            lambda: (
                replicas(cluster, STATEFULSETS, "fincart-processor") == 2
                and replicas(cluster, DEPLOYMENTS, "fincart-redis") == 1
            )
        )
        assert await eventually(lambda: _empty(proxy_faults))
        await finish_job(cluster, "new-load")
        await verifier_reports(cluster, "new", SUMMARY)
        final = await eventually(lambda: status(cluster, "new").get("verdict") and status(cluster, "new"))
    assert final["phase"] == "Completed"
    assert {f["name"]: f["result"] for f in final["faults"]} == {
        "scale": "healed",
        "node": "healed",
        "freeze": "healed",
        "hole": "healed",
    }


async def _empty(proxy_faults: Callable[[], Awaitable[set[str]]]) -> bool:
    return not await proxy_faults()


@pytest.mark.parametrize("how", ["abort", "delete"])
async def test_new_faults_are_healed_on_abort_and_on_deletion(cluster: Cluster, how: str) -> None:
    seed_targets(cluster)
    held = [{**fault("scale", "rescale", "processor", "60s"), "replicas": 4}, {**HOLE, "duration": "60s"}]
    async with fault_proxy() as (url, proxy_faults), operator(settings(proxy_url=url)):
        await apply(cluster, chaostest(how, faults=held))
        await eventually(lambda: replicas(cluster, STATEFULSETS, "fincart-processor") == 4)
        assert await eventually(proxy_faults) == {f"{how}-hole-0"}
        if how == "abort":
            await call(cluster, "patch", path(CHAOSTESTS, how), {"spec": {"abort": True}})
            final = await eventually(lambda: status(cluster, how).get("phase") == "Aborted" and status(cluster, how))
            assert {f["result"] for f in final["faults"]} == {"healed"}
        else:
            await call(cluster, "delete", path(CHAOSTESTS, how))
            await eventually(lambda: get(cluster, CHAOSTESTS, how) is None)
        assert await proxy_faults() == set()
    assert replicas(cluster, STATEFULSETS, "fincart-processor") == 2


async def test_a_restarted_operator_clears_a_network_fault_it_did_not_set(cluster: Cluster) -> None:
    async with fault_proxy() as (url, proxy_faults):
        async with operator(settings(proxy_url=url)):
            await apply(cluster, chaostest("again", faults=[HOLE]))
            assert await eventually(proxy_faults) == {"again-hole-0"}
        assert await proxy_faults() == {"again-hole-0"}  # an exiting operator leaves faults to its heir
        async with operator(settings(proxy_url=url)):
            assert await eventually(lambda: _empty(proxy_faults))
            await finish_job(cluster, "again-load")
            await verifier_reports(cluster, "again", SUMMARY)
            final = await eventually(lambda: status(cluster, "again").get("verdict") and status(cluster, "again"))
    assert final["phase"] == "Completed" and final["faults"][0]["result"] == "healed"
    puts = [r for r in cluster if r.action == kmock.action.CREATE and r.resource == kmock.resource(JOBS)]
    assert sorted(r.data["metadata"]["name"] for r in puts) == ["again-load", "again-verify"]
