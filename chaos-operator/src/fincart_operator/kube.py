"""Kubernetes calls, at the edge: a ChaosTest and its children in (``Observed``), ``decide``'s actions out.

The calls go through the official ``kubernetes`` client, configured like ``kopf.login_via_client`` configures kopf
(``connect()``: the service account in a pod, else KUBECONFIG or ~/.kube/config), so kopf and these calls use one set
of credentials. The client is synchronous: each call runs in a worker thread with a timeout, and answers as plain JSON
(``_preload_content=False``): the pure code reads dicts, and the typed models would only be converted back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import kubernetes
import urllib3
from fincart_core.contracts.chaostest import API_GROUP, API_VERSION, PLURAL, ChaosTestSpec, ChaosTestStatus
from kubernetes.client import ApiClient, ApiException, AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi

from fincart_operator import children
from fincart_operator.children import Owner
from fincart_operator.reconcile import (
    POD_FAULTS,
    RESTORE_ANNOTATION,
    SCALE_FAULTS,
    Annotate,
    Create,
    Delete,
    JobView,
    Observed,
    ProxyCall,
    Restore,
    Scale,
    Workload,
    orphaned_restores,
)

FINALIZER = f"{API_GROUP}/cleanup"
# kind -> the typed API and its methods' resource name (list_namespaced_<name>, create_..., delete_..., patch_..._scale)
RESOURCES: dict[str, tuple[type[Any], str]] = {
    "Job": (BatchV1Api, "job"),
    "ConfigMap": (CoreV1Api, "config_map"),
    "Pod": (CoreV1Api, "pod"),
    "Deployment": (AppsV1Api, "deployment"),
    "StatefulSet": (AppsV1Api, "stateful_set"),
}
MERGE_PATCH = "application/merge-patch+json"  # the client would send a JSON patch by default
# an answer other than 2xx, or none at all (from the API server or the fault proxy)
ERRORS = (ApiException, urllib3.exceptions.HTTPError, TimeoutError, aiohttp.ClientError)


# ---------------------------------------------------------------- reading objects (pure)


def owner_of(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], generation=meta.get("generation"))


def job_view(job: Mapping[str, Any]) -> JobView:
    """A Job's progress; finished only on the terminal conditions Complete or Failed."""
    status = job.get("status") or {}
    outcome: Literal["running", "succeeded", "failed"] = "running"
    message = ""
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            outcome = "succeeded" if cond["type"] == "Complete" else "failed"
            message = cond.get("message") or cond.get("reason") or ""
    return JobView(
        name=job["metadata"]["name"],
        outcome=outcome,
        active=status.get("active") or 0,
        succeeded=status.get("succeeded") or 0,
        failed=status.get("failed") or 0,
        message=message,
    )


def termination_message(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The newest terminated container's message (the verifier writes its summary JSON there)."""
    newest = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    for pod in newest:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((container.get("state") or {}).get("terminated") or {}).get("message")
            if message:
                return str(message)
    return None


def owned(items: Iterable[Mapping[str, Any]], uid: str) -> list[Mapping[str, Any]]:
    """Children of this ChaosTest (not of an earlier one with the same name still being garbage-collected)."""
    return [i for i in items if any(r.get("uid") == uid for r in i["metadata"].get("ownerReferences") or [])]


def workload(kind: Literal["Deployment", "StatefulSet"], body: Mapping[str, Any]) -> Workload:
    meta = body["metadata"]
    return Workload(
        kind,
        meta["name"],
        (body.get("spec") or {}).get("replicas", 1),
        Restore.parse((meta.get("annotations") or {}).get(RESTORE_ANNOTATION)),
    )


def is_finalized(body: Mapping[str, Any]) -> bool:
    return FINALIZER in (body["metadata"].get("finalizers") or [])


# ---------------------------------------------------------------- the API


def connect() -> ApiClient:
    """A client with the credentials ``kopf.login_via_client`` hands kopf: in a pod the service account, elsewhere
    KUBECONFIG or ~/.kube/config."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)
    return ApiClient(config)


@contextlib.contextmanager
def _unless(status: int) -> Iterator[None]:
    """Tolerate one HTTP status: a child that already exists (409), or is already gone (404)."""
    try:
        yield
    except ApiException as exc:
        if exc.status != status:
            raise


@dataclass
class Kube:
    client: ApiClient
    timeout_s: float
    logger: logging.Logger | logging.LoggerAdapter[Any]
    proxy_url: str | None = None

    def _method(self, verb: str, kind: str, suffix: str = "") -> Callable[..., Any]:
        api, resource = RESOURCES[kind]
        return getattr(api(self.client), f"{verb}_namespaced_{resource}{suffix}")  # type: ignore[no-any-return]

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One blocking call in a worker thread, bounded by the timeout; the answer's JSON."""
        answer = await asyncio.to_thread(
            method, *args, _request_timeout=self.timeout_s, _preload_content=False, **kwargs
        )
        return json.loads(answer.data)

    async def list(self, kind: str, namespace: str, match: Mapping[str, str]) -> list[dict[str, Any]]:
        answer = await self._call(self._method("list", kind), namespace, label_selector=children.selector(match))
        return list(answer.get("items") or [])

    async def get_test(self, namespace: str, name: str) -> dict[str, Any] | None:
        with _unless(404):
            return dict(
                await self._call(
                    CustomObjectsApi(self.client).get_namespaced_custom_object,
                    API_GROUP,
                    API_VERSION,
                    namespace,
                    PLURAL,
                    name,
                )
            )
        return None

    async def patch_status(self, namespace: str, name: str, status: ChaosTestStatus) -> None:
        body = {"status": status.model_dump(mode="json", by_alias=True)}  # None removes a field (merge patch)
        await self._call(
            CustomObjectsApi(self.client).patch_namespaced_custom_object_status,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            body,
            _content_type=MERGE_PATCH,
        )

    async def observe(
        self, body: Mapping[str, Any], spec: ChaosTestSpec | None, status: ChaosTestStatus, deleting: bool
    ) -> Observed:
        owner = owner_of(body)
        ns, mine = owner.namespace, {children.TEST_LABEL: owner.name}
        raw_jobs = {j["metadata"]["name"]: j for j in owned(await self.list("Job", ns, mine), owner.uid)}
        maps = {m["metadata"]["name"]: m for m in owned(await self.list("ConfigMap", ns, mine), owner.uid)}
        report_map = maps.get(children.report_config_map_name(owner.name))
        verify_job = raw_jobs.get(children.verify_job_name(owner.name))
        verify_message = None
        if status.phase == "Verifying" and report_map is None and verify_job is not None:
            verify_pods = await self.list("Pod", ns, {**mine, children.ROLE_LABEL: "verify"})
            verify_message = termination_message(owned(verify_pods, verify_job["metadata"]["uid"]))
        pods: dict[str, tuple[str, ...]] = {}
        workloads: dict[str, tuple[Workload, ...]] = {}
        for fault in spec.scheduled_faults() if spec is not None and status.phase == "Running" else []:
            if fault.type in POD_FAULTS:
                found = await self.list("Pod", ns, fault.selector)
                pods[fault.name] = tuple(
                    sorted(p["metadata"]["name"] for p in found if not p["metadata"].get("deletionTimestamp"))
                )
            elif fault.type in SCALE_FAULTS:
                workloads[fault.name] = tuple(
                    [
                        workload(kind, w)
                        for kind in ("Deployment", "StatefulSet")
                        for w in await self.list(kind, ns, fault.selector)
                    ]
                )
        return Observed(
            finalized=is_finalized(body),
            deleting=deleting,
            config_maps=frozenset(maps),
            jobs={name: job_view(job) for name, job in raw_jobs.items()},
            report=(report_map.get("data") or {}).get(children.REPORT_KEY) if report_map else None,
            verify_message=verify_message,
            pods=pods,
            workloads=workloads,
        )

    async def heal_orphans(self, namespaces: Iterable[str] | None) -> int:
        """Scale back every workload a scale fault left at 0 whose ChaosTest is gone or finished (``namespaces``
        None: all); how many actions that took."""
        found: list[tuple[str, Workload]] = []
        tests: dict[tuple[str, str], tuple[str, str]] = {}
        custom = CustomObjectsApi(self.client)
        for namespace in namespaces if namespaces is not None else [None]:
            for kind in ("Deployment", "StatefulSet"):
                api, resource = RESOURCES[kind]
                if namespace is None:
                    answer = await self._call(getattr(api(self.client), f"list_{resource}_for_all_namespaces"))
                else:
                    answer = await self._call(self._method("list", kind), namespace)
                found += [(w["metadata"]["namespace"], workload(kind, w)) for w in answer.get("items") or []]
            listed = await (
                self._call(custom.list_cluster_custom_object, API_GROUP, API_VERSION, PLURAL)
                if namespace is None
                else self._call(custom.list_namespaced_custom_object, API_GROUP, API_VERSION, namespace, PLURAL)
            )
            for test in listed.get("items") or []:
                meta = test["metadata"]
                tests[meta["namespace"], meta["name"]] = (meta["uid"], (test.get("status") or {}).get("phase", ""))
        heal = orphaned_restores(found, tests)
        for namespace, actions in heal.items():
            self.logger.warning(f"healing workloads a deleted ChaosTest left scaled down in {namespace}: {actions}")
            await self.apply(namespace, actions)  # type: ignore[arg-type]
        return sum(len(a) for a in heal.values())

    async def proxy(self, call: ProxyCall) -> None:
        """PUT or DELETE one fault on the fault proxy (DELETE answers 204 whether or not it was set)."""
        if self.proxy_url is None:  # reconcile.validate() rejects network faults without a proxy
            raise ValueError("no fault proxy configured")
        url = f"{self.proxy_url.rstrip('/')}/faults/{call.name}"
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=True) as http:
            if call.body is None:
                await (await http.delete(url)).release()
            else:
                await (await http.put(url, json=call.body)).release()

    async def apply(self, namespace: str, actions: Iterable[Create | Delete | Scale | Annotate | ProxyCall]) -> None:
        """In order; a child that already exists (or is already gone) is what was wanted."""
        for action in actions:
            match action:
                case Create(body=body):
                    with _unless(409):
                        await self._call(self._method("create", body["kind"]), namespace, body)
                case Delete(kind=kind, name=name, grace_period_s=grace):
                    # Background: a Job's pods go with it (the API's default for Jobs orphans them)
                    with _unless(404):
                        await self._call(
                            self._method("delete", kind),
                            name,
                            namespace,
                            propagation_policy="Background",
                            grace_period_seconds=grace,
                        )
                case Annotate(kind=kind, name=name, key=key, value=value):
                    with _unless(404):
                        await self._call(
                            self._method("patch", kind),
                            name,
                            namespace,
                            {"metadata": {"annotations": {key: value}}},
                            _content_type=MERGE_PATCH,
                        )
                case ProxyCall():
                    await self.proxy(action)
                case Scale(kind=kind, name=name, replicas=replicas):
                    try:
                        await self._call(
                            self._method("patch", kind, "_scale"),
                            name,
                            namespace,
                            {"spec": {"replicas": replicas}},
                            _content_type=MERGE_PATCH,
                        )
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                        self.logger.warning(f"{kind}/{name} is gone; cannot scale it to {replicas}")
