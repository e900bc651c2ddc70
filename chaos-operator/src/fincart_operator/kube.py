"""Kubernetes calls, at the edge: a ChaosTest and its children in (``Observed``), ``decide``'s actions out.

The calls go through kopf's own API client: the same login (``@kopf.on.login``), HTTP session, retries and
re-authentication on 401 as kopf's watches and patches, so one set of credentials serves the whole operator (and the
kmock tests log in once). That client is kopf's internal module: only this file touches it, and uv.lock pins kopf.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from fincart_core.contracts.chaostest import API_GROUP, API_VERSION, PLURAL, ChaosTestSpec, ChaosTestStatus
from kopf._cogs.clients import api, errors

from fincart_operator import children
from fincart_operator.children import Owner
from fincart_operator.reconcile import POD_FAULTS, SCALE_FAULTS, Create, Delete, JobView, Observed, Scale, Workload

FINALIZER = f"{API_GROUP}/cleanup"
PATHS = {
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
    "ChaosTest": f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{{ns}}/{PLURAL}",
}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


# ---------------------------------------------------------------- reading objects (pure)


def owner_of(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], generation=meta.get("generation"))


def job_view(job: Mapping[str, Any]) -> JobView:
    """A Job's progress; finished only on the terminal conditions Complete or Failed."""
    status = job.get("status") or {}
    outcome, message = "running", ""
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            outcome = "succeeded" if cond["type"] == "Complete" else "failed"
            message = cond.get("message") or cond.get("reason") or ""
    return JobView(name=job["metadata"]["name"], outcome=outcome, active=status.get("active") or 0,  # type: ignore[arg-type]
                   succeeded=status.get("succeeded") or 0, failed=status.get("failed") or 0, message=message)


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


def is_finalized(body: Mapping[str, Any]) -> bool:
    return FINALIZER in (body["metadata"].get("finalizers") or [])


# ---------------------------------------------------------------- the API


@dataclass
class Kube:
    settings: kopf.OperatorSettings
    logger: logging.Logger | logging.LoggerAdapter[Any]

    def _url(self, kind: str, namespace: str, name: str = "", subresource: str = "", **query: str) -> str:
        path = "/".join(part for part in (PATHS[kind].format(ns=namespace), name, subresource) if part)
        return path + ("?" + urllib.parse.urlencode(query) if query else "")

    async def _call(self, method: str, url: str, payload: object = None, headers: dict[str, str] | None = None) -> Any:
        call = {"get": api.get, "post": api.post, "patch": api.patch, "delete": api.delete}[method]
        return await call(url, payload=payload, headers=headers, settings=self.settings, logger=self.logger)

    async def list(self, kind: str, namespace: str, match: Mapping[str, str]) -> list[dict[str, Any]]:
        answer = await self._call("get", self._url(kind, namespace, labelSelector=children.selector(match)))
        return list(answer.get("items") or [])

    async def get_test(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(await self._call("get", self._url("ChaosTest", namespace, name)))
        except errors.APINotFoundError:
            return None

    async def patch_status(self, namespace: str, name: str, status: ChaosTestStatus) -> None:
        body = {"status": status.model_dump(mode="json", by_alias=True)}  # None removes a field (merge patch)
        await self._call("patch", self._url("ChaosTest", namespace, name, "status"), body, MERGE_PATCH)

    async def observe(self, body: Mapping[str, Any], spec: ChaosTestSpec | None, status: ChaosTestStatus,
                      deleting: bool) -> Observed:
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
        for fault in spec.faults if spec is not None and status.phase == "Running" else []:
            if fault.type in POD_FAULTS:
                found = await self.list("Pod", ns, fault.selector)
                pods[fault.name] = tuple(sorted(p["metadata"]["name"] for p in found
                                                if not p["metadata"].get("deletionTimestamp")))
            elif fault.type in SCALE_FAULTS:
                matched = [(kind, w) for kind in ("Deployment", "StatefulSet")
                           for w in await self.list(kind, ns, fault.selector)]
                workloads[fault.name] = tuple(Workload(kind, w["metadata"]["name"],  # type: ignore[arg-type]
                                                       (w.get("spec") or {}).get("replicas", 1)) for kind, w in matched)
        return Observed(
            finalized=is_finalized(body), deleting=deleting, config_maps=frozenset(maps),
            jobs={name: job_view(job) for name, job in raw_jobs.items()},
            report=(report_map.get("data") or {}).get(children.REPORT_KEY) if report_map else None,
            verify_message=verify_message, pods=pods, workloads=workloads,
        )

    async def apply(self, namespace: str, actions: Iterable[Create | Delete | Scale]) -> None:
        """In order; a child that already exists (or is already gone) is what was wanted."""
        for action in actions:
            match action:
                case Create(body=body):
                    with contextlib.suppress(errors.APIConflictError):
                        await self._call("post", self._url(body["kind"], namespace), body)
                case Delete(kind=kind, name=name):
                    # Background: a Job's pods go with it (the API's default for Jobs orphans them)
                    with contextlib.suppress(errors.APINotFoundError):
                        await self._call("delete", self._url(kind, namespace, name, propagationPolicy="Background"))
                case Scale(kind=kind, name=name, replicas=replicas):
                    try:
                        await self._call("patch", self._url(kind, namespace, name, "scale"),
                                         {"spec": {"replicas": replicas}}, MERGE_PATCH)
                    except errors.APINotFoundError:
                        self.logger.warning(f"{kind}/{name} is gone; cannot scale it to {replicas}")

