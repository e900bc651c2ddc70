"""Where a ChaosTest may reach in a cluster: checked before anything starts.

The load runners send requests to ``ingestUrl`` and the verifier reads ``syncUrl`` (and report what they got
back), fault selectors pick pods to kill or workloads to scale to zero, and secret refs are mounted into the
runner pods. So a ChaosTest may only point at FinCart's own services of its namespace (or an allow-listed
origin), select FinCart components (never the operator or PostgreSQL; the database only through
dbConnectionDrop when that is allowed) and name allowed Secrets. The operator (reconcile.validate) and
``fincart-chaos validate --namespace`` apply the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from fincart_core.contracts.chaostest import ChaosTestSpec

COMPONENT_LABEL = "app.kubernetes.io/component"
FAULT_COMPONENTS = frozenset({"ingest", "processor", "sync", "nats", "redis"})  # the chart's component labels
DB_FAULTS = frozenset({"dbConnectionDrop"})
CLUSTER_DOMAIN = "cluster.local"
# the chart's ingress.controller.url: with its Ingress on, the operator allows it (the examples' target)
INGRESS_CONTROLLER_URL = "http://ingress-nginx-controller.ingress-nginx.svc"


@dataclass(frozen=True)
class Boundaries:
    namespace: str
    ingest_services: frozenset[str] = frozenset({"fincart-ingest"})
    sync_services: frozenset[str] = frozenset({"fincart-sync"})
    allowed_origins: frozenset[str] = frozenset()  # URLs whose scheme://host[:port] is allowed besides the services
    secret_names: frozenset[str] = frozenset({"fincart"})
    allow_db_faults: bool = False


def service_hosts(service: str, namespace: str) -> set[str]:
    """The names a Service resolves by from a pod of ``namespace`` (its own namespace only)."""
    qualified = f"{service}.{namespace}"
    return {service, qualified, f"{qualified}.svc", f"{qualified}.svc.{CLUSTER_DOMAIN}"}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def url_problem(where: str, url: str, services: frozenset[str], rules: Boundaries) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return f"{where}: not a URL: {url[:100]!r}"
    if _origin(url) in {_origin(o) for o in rules.allowed_origins}:
        return None
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return f"{where}: must be an http(s) URL without credentials, got {url[:100]!r}"
    hosts = {h for s in services for h in service_hosts(s, rules.namespace)}
    if (parts.hostname or "") not in hosts:
        names = ", ".join(sorted(services)) or "none configured"
        return (
            f"{where}: must point at a FinCart service of namespace {rules.namespace} ({names}) or an "
            f"allow-listed origin; got host {parts.hostname!r}"
        )
    return None


def boundary_problems(spec: ChaosTestSpec, rules: Boundaries) -> list[str]:
    """Every way ``spec`` reaches outside what a ChaosTest may touch, each naming the field."""
    target = spec.target
    problems = [
        p
        for p in (
            url_problem("spec.target.ingestUrl", target.ingest_url, rules.ingest_services, rules),
            target.sync_url and url_problem("spec.target.syncUrl", target.sync_url, rules.sync_services, rules),
        )
        if p
    ]
    refs = {
        "databaseUrlSecretRef": target.database_url_secret_ref,
        "hmacSecretRef": target.hmac_secret_ref,
        "syncTokenSecretRef": target.sync_token_secret_ref,
    }
    for name, ref in refs.items():
        if ref is not None and ref.name not in rules.secret_names:
            problems.append(
                f"spec.target.{name}.name: Secret {ref.name!r} is not one a ChaosTest may read "
                f"(allowed: {', '.join(sorted(rules.secret_names))})"
            )
    for index, fault in enumerate(spec.faults):
        where = f"spec.faults[{index}]"
        if fault.type in DB_FAULTS:
            if not rules.allow_db_faults:
                problems.append(
                    f"{where}.type: {fault.type} touches the database, which the operator's settings "
                    "do not allow (FINCART_CHAOS_ALLOW_DB_FAULTS)"
                )
            continue
        if fault.network is not None:  # no selector: the fault proxy's route names a FinCart connection
            continue
        if fault.selector.get(COMPONENT_LABEL) not in FAULT_COMPONENTS:
            problems.append(
                f"{where}.selector: must pick FinCart components by {COMPONENT_LABEL} (one of "
                f"{', '.join(sorted(FAULT_COMPONENTS))}); the operator and the database are never targets"
            )
    return problems
