"""The objects a ChaosTest owns, as plain dicts: spec and report ConfigMaps, load, fault and verification Jobs.

Pure builders: data in, manifests out. Every child carries an owner reference to the ChaosTest (so Kubernetes
garbage-collects it with the test) and the labels the operator lists its children by.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from fincart_core.contracts.chaostest import (
    API_GROUP,
    API_VERSION,
    KIND,
    ChaosTestSpec,
    Fault,
    SecretKeyRef,
)
from fincart_core.contracts.report import FaultRecord
from fincart_core.settings import replace_userinfo

from fincart_operator.settings import OperatorSettings

MANAGED_BY = "fincart-operator"
TEST_LABEL = f"{API_GROUP}/test"
ROLE_LABEL = f"{API_GROUP}/role"
SPEC_KEY = "chaostest.yaml"
SPEC_DIR = "/etc/fincart-chaos"
SPEC_PATH = f"{SPEC_DIR}/{SPEC_KEY}"
REPORT_KEY = "summary.json"
TERMINATION_LOG = "/dev/termination-log"
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


@dataclass(frozen=True)
class Owner:
    """The ChaosTest the children belong to."""

    name: str
    namespace: str
    uid: str
    generation: int | None = None

    @property
    def run_id(self) -> str:
        """Suffix of the order ids: unique per run, so runs on one database never share orders."""
        return self.uid[:8]


def spec_config_map_name(test: str) -> str:
    return f"{test}-spec"


def report_config_map_name(test: str) -> str:
    return f"{test}-report"


def load_job_name(test: str) -> str:
    return f"{test}-load"


def verify_job_name(test: str) -> str:
    return f"{test}-verify"


def fault_job_name(test: str, fault: str, occurrence: int) -> str:
    return f"{test}-fault-{fault}-{occurrence}"


def labels(test: str, role: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY, TEST_LABEL: test, ROLE_LABEL: role}


def selector(match: Mapping[str, str]) -> str:
    """An equality-based label selector string for list calls."""
    return ",".join(f"{key}={value}" for key, value in sorted(match.items()))


def _metadata(owner: Owner, name: str, role: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name, role),
        "ownerReferences": [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def spec_document(owner: Owner, spec: ChaosTestSpec) -> str:
    """The whole ChaosTest as the runners' `fincart-chaos load|verify FILE` read it (defaults filled in)."""
    document: str = yaml.safe_dump(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": owner.name, "namespace": owner.namespace},
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        },
        sort_keys=False,
    )
    return document


def spec_config_map(owner: Owner, spec: ChaosTestSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, spec_config_map_name(owner.name), "spec"),
        "data": {SPEC_KEY: spec_document(owner, spec)},
    }


def report_config_map(owner: Owner, summary_json: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, report_config_map_name(owner.name), "report"),
        "data": {REPORT_KEY: summary_json},
    }


def _secret_env(name: str, ref: SecretKeyRef | None) -> dict[str, Any]:
    if ref is None:  # reconcile.validate() rejects such specs before any child is built
        raise ValueError(f"{name}: the spec names no Secret for it")
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _job(
    owner: Owner,
    name: str,
    role: str,
    settings: OperatorSettings,
    *,
    args: list[str],
    env: list[dict[str, Any]],
    deadline_s: float,
    backoff_limit: int,
    **job_spec: Any,
) -> dict[str, Any]:
    metadata = _metadata(owner, name, role)
    container = {
        "name": "chaos",
        "image": settings.runner_image,
        "imagePullPolicy": settings.runner_image_pull_policy,
        "args": args,
        "env": env,
        "resources": RESOURCES,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod = {
        "metadata": {"labels": metadata["labels"]},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,  # runners talk to FinCart, never to the Kubernetes API
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {"name": "spec", "configMap": {"name": spec_config_map_name(owner.name)}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        },
    }
    # activeDeadlineSeconds: Kubernetes stops the pods at the deadline even while the operator is down
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            **job_spec,
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": math.ceil(deadline_s),
            "template": pod,
        },
    }


def _nats_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    """Where the runners publish their ledgers and the verifier its bundle: FinCart's own NATS (the operator's),
    as the runner user when a password Secret is set. The password comes first: Kubernetes expands $(VAR) in a
    value only from variables defined before it."""
    url = settings.nats_url
    env = [{"name": "FINCART_NATS_PREFIX", "value": settings.nats_prefix}]
    if settings.runner_nats_password_secret:
        ref = SecretKeyRef(name=settings.runner_nats_password_secret, key=settings.runner_nats_password_key)
        env.append(_secret_env("FINCART_NATS_PASSWORD", ref))
        url = replace_userinfo(url, f"{settings.runner_nats_user}:$(FINCART_NATS_PASSWORD)")
    return [*env, {"name": "FINCART_NATS_URL", "value": url}]


def _sync_token_env(spec: ChaosTestSpec) -> list[dict[str, Any]]:
    """sync's read token for a runner that reads /sync (the spec's syncUrl): without it sync answers 4401."""
    return [_secret_env("FINCART_SYNC_TOKEN", spec.target.sync_token_secret_ref)] if spec.target.sync_url else []


def load_job(owner: Owner, spec: ChaosTestSpec, settings: OperatorSettings, deadline_s: float) -> dict[str, Any]:
    """Indexed Job: runner i sends share i of the workload (`--runner-index` = the completion index) and publishes
    its ledger for the verifier."""
    runners = spec.load.parallelism
    env = [
        {"name": "FINCART_CHAOS_RUN_ID", "value": owner.run_id},
        _secret_env("FINCART_WEBHOOK_SECRET", spec.target.hmac_secret_ref),
        *_nats_env(settings),
        *_sync_token_env(spec),  # the stream position before the first request, where the verifier replays from
    ]
    return _job(
        owner,
        load_job_name(owner.name),
        "load",
        settings,
        args=["load", SPEC_PATH, "--runner-index", "$(JOB_COMPLETION_INDEX)", "--publish-ledger"],
        env=env,
        # never retried: a second runner pod sends its webhooks again and the verifier would blame the pipeline
        deadline_s=deadline_s,
        backoff_limit=0,
        completionMode="Indexed",
        completions=runners,
        parallelism=runners,
    )


def fault_job(
    owner: Owner, spec: ChaosTestSpec, fault: Fault, occurrence: int, settings: OperatorSettings, deadline_s: float
) -> dict[str, Any]:
    """dbConnectionDrop: a pod that terminates FinCart's database connections for the fault's duration."""
    env = [_secret_env("FINCART_DATABASE_URL", spec.target.database_url_secret_ref)]
    return _job(
        owner,
        fault_job_name(owner.name, fault.name, occurrence),
        "fault",
        settings,
        args=["inject", fault.type, "--duration", fault.duration],
        env=env,
        deadline_s=deadline_s,
        backoff_limit=0,
    )


def verify_job(
    owner: Owner, spec: ChaosTestSpec, settings: OperatorSettings, deadline_s: float, faults: Sequence[FaultRecord] = ()
) -> dict[str, Any]:
    """Checks the invariants with the runners' ledgers and the fault windows (for the coverage check); its summary
    (<= 4 KiB JSON, with where the evidence bundle is) is the pod's termination message. A Fail exits 1, so the
    Job never retries: a verdict is a result, not a crash."""
    env = [
        {"name": "FINCART_CHAOS_RUN_ID", "value": owner.run_id},
        _secret_env("FINCART_DATABASE_URL", spec.target.database_url_secret_ref),
        *_nats_env(settings),
        {"name": "FINCART_CHAOS_FAULTS", "value": json.dumps([f.model_dump(mode="json") for f in faults])},
        *_sync_token_env(spec),
    ]
    return _job(
        owner,
        verify_job_name(owner.name),
        "verify",
        settings,
        args=["verify", SPEC_PATH, "--summary-file", TERMINATION_LOG, "--ledger-from-nats", "--publish-bundle"],
        env=env,
        deadline_s=deadline_s,
        backoff_limit=0,
    )
