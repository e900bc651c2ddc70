"""The local stack of ``fincart-chaos run --local``: FINCART_* services when set, else embedded
nats-server / Redis / PostgreSQL, plus ingest, N processor replicas and sync as subprocesses.

Each ChaosTest gets its own database, stream prefix and services, so tests in one file never see
each other's orders; everything this run started or created is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

from fincart_core.blocking import run_blocking
from fincart_core.db.admin import drop_database
from fincart_core.devstack import DevStack, StackConfig
from fincart_core.localstack import Infra, start_infra
from fincart_core.partition import Topology
from fincart_core.streams import delete_streams

from fincart_chaos.execution import Endpoints
from fincart_chaos.faults import LocalTargets


@contextlib.contextmanager
def infrastructure() -> Iterator[Infra]:
    infra = start_infra()
    try:
        yield infra
    finally:
        infra.stop()


@contextlib.contextmanager
def services(infra: Infra, processors: int, logdir: Path, keep: bool = False,
             processor_command: list[str] | None = None, via_ingress: bool = False, ingress_host: str | None = None,
             ) -> Iterator[tuple[Endpoints, LocalTargets]]:
    """``processor_command``: argv of each processor replica instead of ``fincart-processor``;
    ``via_ingress``: load and observer go through nginx with the chart's Ingress rules (and its rule for
    ``ingress_host``, which every request then names in its Host header)."""
    run = uuid.uuid4().hex[:8]
    partitions = int(os.environ.get("FINCART_PARTITIONS", "16"))
    config = StackConfig(database=f"fincart_chaos_{run}", partitions=partitions, processors=processors,
                         nats_prefix=f"chaos-{run}", webhook_secret=secrets.token_hex(16), ingest_port=0,
                         sync_port=0, log_level=os.environ.get("FINCART_LOG_LEVEL", "WARNING"),
                         processor_command=processor_command, ingress=via_ingress,
                         ingress_host=ingress_host or "")
    logdir.mkdir(parents=True, exist_ok=True)
    stack = DevStack(config, infra, logdir)
    try:
        stack.start()
        endpoints = Endpoints(ingest_url=stack.public_ingest_url, database_url=stack.database_url,
                              secret=config.webhook_secret, sync_url=stack.public_sync_url, host=ingress_host)
        targets = LocalTargets(
            database_url=stack.database_url,
            services={"processor": list(stack.processors), "ingest": [stack.ingest] if stack.ingest else [],
                      "sync": [stack.sync] if stack.sync else []},
            nats=infra.embedded.get("nats"), redis=infra.embedded.get("redis"),
        )
        yield endpoints, targets
    finally:
        stack.stop()
        if not keep:
            with contextlib.suppress(Exception):  # cleanup must not hide the run's own outcome
                run_blocking(asyncio.run, drop_database(stack.database_url))
                run_blocking(asyncio.run, delete_streams(infra.nats_url, Topology(partitions, config.nats_prefix)))
