"""The local stack of ``fincart-chaos run --local``: FINCART_* services when set, else embedded
nats-server / Redis / PostgreSQL, plus ingest, N processor replicas and sync as subprocesses.

Each ChaosTest gets its own database, stream prefix and services, so tests in one file never see
each other's orders; everything this run started or created is removed at the end. When the test has
network faults, a fault proxy runs too and the connections they name go through it: the service is
started with its ``FINCART_*_URL`` pointing at the proxy (or the runners send to ingest through it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

from fincart_core.blocking import run_blocking
from fincart_core.contracts.chaostest import ChaosTest
from fincart_core.db.admin import drop_database, with_database
from fincart_core.partition import Topology
from fincart_core.streams import delete_streams
from fincart_devstack.devstack import DevStack, StackConfig
from fincart_devstack.localstack import (
    READY_TIMEOUT_S,
    Infra,
    ManagedProcess,
    find_binary,
    free_port,
    http_ready,
    start_infra,
    wait_for,
)

from fincart_chaos.execution import Endpoints
from fincart_chaos.faults import LocalTargets
from fincart_chaos.sync_endpoint import SyncEndpoint

URL_VARIABLES = {"nats": "FINCART_NATS_URL", "redis": "FINCART_REDIS_URL", "postgres": "FINCART_DATABASE_URL"}


@contextlib.contextmanager
def infrastructure(nats_nodes: int = 1) -> Iterator[Infra]:
    """Per-component NATS users and a Redis password, as in the chart (so NATS and Redis are embedded);
    ``nats_nodes`` 3: an embedded 3-node JetStream cluster (a run kills its nodes)."""
    infra = start_infra(nats_nodes=nats_nodes, credentials=True)
    try:
        yield infra
    finally:
        infra.stop()


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url.split(",")[0].strip())
    return parts.hostname or "127.0.0.1", parts.port or 0


def via_proxy(url: str, port: int) -> str:
    """``url`` with its (first) host:port replaced by the proxy's listener."""
    parts = urlsplit(url.split(",")[0].strip())
    netloc = parts.netloc.rsplit("@", 1)
    address = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{address}" if len(netloc) == 2 else address))


class FaultProxyProcess(ManagedProcess):
    """``fincart-chaos proxy`` for this run's routes; ready when its control API answers."""

    def __init__(self, routes: dict[str, tuple[str, int]], logdir: Path) -> None:
        self.listen = {name: free_port() for name in routes}
        self.control_port = free_port()
        argv = [find_binary("fincart-chaos"), "proxy", "--control", f"127.0.0.1:{self.control_port}"]
        for name, (host, port) in routes.items():
            argv += ["--route", f"{name}=127.0.0.1:{self.listen[name]}={host}:{port}"]
        super().__init__("fault-proxy", argv, log_path=logdir / "fault-proxy.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def start(self) -> None:
        super().start()
        wait_for(lambda: http_ready(f"{self.url}/healthz"), READY_TIMEOUT_S, "fault proxy")


@contextlib.contextmanager
def services(
    infra: Infra,
    processors: int,
    logdir: Path,
    keep: bool = False,
    processor_command: list[str] | None = None,
    test: ChaosTest | None = None,
    ingest_command: list[str] | None = None,
    sync_command: list[str] | None = None,
    via_ingress: bool = False,
    ingress_host: str | None = None,
) -> Iterator[tuple[Endpoints, LocalTargets]]:
    """``*_command``: argv of a service instead of its console script (deliberately broken ones in tests);
    ``test``: the ChaosTest whose network faults route connections through the fault proxy; ``via_ingress``:
    load and observer go through nginx with the chart's Ingress rules (and its rule for ``ingress_host``,
    which every request then names in its Host header)."""
    run = uuid.uuid4().hex[:8]
    partitions = int(os.environ.get("FINCART_PARTITIONS", "16"))
    config = StackConfig(
        database=f"fincart_chaos_{run}",
        partitions=partitions,
        processors=processors,
        nats_prefix=f"chaos-{run}",
        webhook_secret=secrets.token_hex(16),
        ingest_port=free_port(),
        sync_port=0,
        log_level=os.environ.get("FINCART_LOG_LEVEL", "WARNING"),
        processor_command=processor_command,
        ingest_command=ingest_command,
        sync_command=sync_command,
        ingress=via_ingress,
        ingress_host=ingress_host or "",
    )
    logdir.mkdir(parents=True, exist_ok=True)
    routes = {
        f.network.target.route: f.network.target for f in (test.spec.scheduled_faults() if test else []) if f.network
    }
    upstreams = {
        "nats": infra.nats_url,
        "redis": infra.redis_url,
        "postgres": infra.database_url,
        "ingest": f"http://127.0.0.1:{config.ingest_port}",
    }
    proxy = (
        FaultProxyProcess({name: host_port(upstreams[t.upstream]) for name, t in routes.items()}, logdir)
        if routes
        else None
    )
    runners_url = None  # the runners' way to ingest when a network fault sits on it
    for target in routes.values():
        # a service's own NATS user travels in the proxied URL
        upstream = infra.nats_url_for(target.service) if target.upstream == "nats" else upstreams[target.upstream]
        via = via_proxy(upstream, proxy.listen[target.route])  # type: ignore[union-attr]
        if target.service == "runners":
            runners_url = via
        else:
            url = with_database(via, config.database) if target.upstream == "postgres" else via
            config.service_env.setdefault(target.service, {})[URL_VARIABLES[target.upstream]] = url
    stack = DevStack(config, infra, logdir)
    try:
        if proxy:
            proxy.start()
        stack.start()
        sync = SyncEndpoint(stack.public_sync_url, config.read_token, ingress_host) if stack.public_sync_url else None
        endpoints = Endpoints(
            ingest_url=runners_url or stack.public_ingest_url,
            database_url=stack.database_url,
            secret=config.webhook_secret,
            sync=sync,
            host=ingress_host,
        )
        nats = infra.embedded.get("nats")
        nats_nodes: list[ManagedProcess] = (
            list(infra.nats_cluster.nodes) if infra.nats_cluster else ([nats] if nats else [])
        )
        targets = LocalTargets(
            database_url=stack.database_url,
            # the stack's own list, changed in place by a rescale (so that the stack stops what runs at the end)
            services={
                "processor": cast(list[ManagedProcess], stack.processors),
                "ingest": [stack.ingest] if stack.ingest else [],
                "sync": [stack.sync] if stack.sync else [],
                "nats": nats_nodes,
                **{kind: [process] for kind, process in infra.embedded.items() if kind in ("redis", "postgres")},
            },
            nats=nats,
            redis=infra.embedded.get("redis"),
            nats_nodes=nats_nodes,
            proxy_url=proxy.url if proxy else None,
            new_processor=stack.processor,
        )
        yield endpoints, targets
    finally:
        stack.stop()
        if proxy:
            proxy.stop()
        if not keep:
            with contextlib.suppress(Exception):  # cleanup must not hide the run's own outcome
                run_blocking(asyncio.run, drop_database(stack.database_url))
                run_blocking(asyncio.run, delete_streams(infra.nats_url, Topology(partitions, config.nats_prefix)))
