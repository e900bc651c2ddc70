"""The kopf handlers and ``run()`` (the fincart-operator console script).

One daemon per ChaosTest does the work: read the test and its children, ``reconcile.decide()``, apply the actions,
write the status, post Events, count metrics; look again after poll_interval_s (at once when the status moved).
kopf spawns it on creation and on resume (an operator restart picks running tests up from their status and
children), holds the finalizer while it runs and signals it on deletion: then it stops the load and heals the faults
before it exits and kopf removes the finalizer. One actor per test, so no create, timer and delete handlers race.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from fincart_core.contracts.chaostest import API_GROUP, API_VERSION, PLURAL
from fincart_core.telemetry import configure_logging

from fincart_operator import metrics, reconcile
from fincart_operator.kube import ERRORS, FINALIZER, Kube, connect, owner_of
from fincart_operator.reconcile import Event, InvalidSpec
from fincart_operator.settings import OperatorSettings


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    if "config" not in memo:  # run() passes it; `kopf run` and tests may not
        memo.config = OperatorSettings()
    config: OperatorSettings = memo.config
    settings.persistence.finalizer = FINALIZER
    settings.posting.reporting_component = config.service_name
    settings.posting.level = logging.WARNING  # transitions are posted with kopf.event(); INFO logs stay logs
    settings.peering.standalone = True  # one replica with the Recreate strategy; the chart has no peering CRD
    # namespaced (the chart's Role): no namespace listing (forbidden, and kopf retries it for a minute) and no
    # CRD watching (Helm installs crds/ before the operator starts)
    settings.scanning.disabled = config.namespace is not None
    # a stopping daemon finishes its step (a few API calls) and exits: on deletion it heals first
    settings.background.instant_exit_timeout = 2.0
    settings.background.cancellation_polling = config.poll_interval_s  # finalizer removal after a deletion
    memo.api = connect()  # before @kopf.on.login, which reads the same configuration
    memo.http, memo.http_port = await metrics.serve(config.http_host, config.http_port)
    # a test deleted while the operator was down (its finalizer removed) left its scale faults on the workloads
    try:
        healed = await Kube(memo.api, config.api_timeout_s, logger).heal_orphans(
            [config.namespace] if config.namespace else None
        )
    except ERRORS as exc:  # the operator still runs; the next start tries again
        logger.error(f"could not look for workloads left scaled down: {exc!r}")
        healed = 0
    if healed:
        logger.warning(f"healed {healed // 2} workload(s) left scaled down by ChaosTests that no longer run")
    logger.info(f"metrics and /healthz on port {memo.http_port}; runner image {config.runner_image}")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.http.cleanup()
    memo.api.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The kubernetes client's configuration, as ``connect()`` reads it: in a pod the service account, elsewhere
    KUBECONFIG or ~/.kube/config (certificates, tokens, exec plugins)."""
    return kopf.login_via_client(**kwargs)


def needs_operator(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return reconcile.needs_attention(spec, status)


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, when=needs_operator)
async def chaostest(
    stopped: kopf.DaemonStopped, name: str, namespace: str | None, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    assert namespace is not None  # ChaosTests are namespaced
    config: OperatorSettings = memo.config
    kube = Kube(memo.api, config.api_timeout_s, logger, config.proxy_url)
    try:
        while True:
            deleting = bool(stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)
            if stopped and not deleting:
                return  # the operator is stopping: everything needed to continue is in the status and children
            try:
                wait = await step(kube, config, namespace, name, deleting)
            except ERRORS as exc:
                logger.warning(f"chaostest {namespace}/{name}: reconcile failed, retrying: {exc!r}")
                await asyncio.sleep(config.poll_interval_s)
                continue
            if wait is None or deleting:
                return
            if wait:
                await stopped.wait(wait)
    finally:
        metrics.track(f"{namespace}/{name}", None)


async def step(kube: Kube, config: OperatorSettings, namespace: str, name: str, deleting: bool) -> float | None:
    """One look at a ChaosTest: observe, decide, act. Returns when to look again (None: never)."""
    body = await kube.get_test(namespace, name)
    if body is None:
        return None
    status = reconcile.parse_status(body.get("status"))
    try:
        spec = reconcile.validate(body.get("spec"), name, config.boundaries(namespace), config.proxy_url is not None)
    except InvalidSpec:
        spec = None  # decide() reports it
    observed = await kube.observe(body, spec, status, deleting)
    decision = reconcile.decide(owner_of(body), body.get("spec"), status, observed, datetime.now(UTC), config)
    await kube.apply(namespace, [a for a in decision.actions if not isinstance(a, Event)])
    moved = decision.status != status
    if moved:
        await kube.patch_status(namespace, name, decision.status)
        if decision.status.phase != status.phase:
            kube.logger.info(
                f"chaostest {namespace}/{name}: {status.phase} -> {decision.status.phase}: {decision.status.message}"
            )
    for event in decision.actions:
        if isinstance(event, Event):
            kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=event.type, reason=event.reason, message=event.message)
    metrics.record(status, decision.status)
    metrics.track(f"{namespace}/{name}", decision.status)
    return 0.0 if moved and decision.wait_s is not None else decision.wait_s


def run() -> None:
    config = OperatorSettings()
    configure_logging(config.log_level)
    namespace = config.namespace
    kopf.run(clusterwide=namespace is None, namespaces=[namespace] if namespace else (), memo=kopf.Memo(config=config))
