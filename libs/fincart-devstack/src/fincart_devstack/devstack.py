"""``fincart-dev up``: the whole FinCart stack on one machine, in the foreground.

:class:`DevStack` is also what ``fincart-chaos run --local`` and the end-to-end tests start: infra
(configured or embedded), the migrated database, ingest, N processor replicas and sync.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fincart_core.blocking import run_blocking
from fincart_core.db.admin import ensure_database, with_database
from fincart_core.db.migrate import upgrade

from fincart_devstack.localstack import (
    Infra,
    ServiceProcess,
    StackError,
    find_binary,
    free_port,
    service_env,
    start_infra,
)

DEV_WEBHOOK_SECRET = "fincart-dev-secret"


@dataclass
class StackConfig:
    database: str = "fincart"
    partitions: int = 16
    processors: int = 1
    nats_prefix: str = ""
    webhook_secret: str = DEV_WEBHOOK_SECRET
    ingest_port: int = 8080
    sync_port: int = 8082
    with_sync: bool = True
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    # argv of each processor replica instead of the console script (tests run deliberately broken processors)
    processor_command: list[str] | None = None
    # likewise for ingest and sync (deliberately broken ones: tests/support/broken_services.py)
    ingest_command: list[str] | None = None
    sync_command: list[str] | None = None
    # per service (ingest, processor, sync): env that wins over the rest (a chaos run routes one through its proxy)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)


class DevStack:
    def __init__(self, config: StackConfig, infra: Infra, logdir: Path) -> None:
        self.config = config
        self.infra = infra
        self.logdir = logdir
        self.database_url = with_database(infra.database_url, config.database)
        self.ingest: ServiceProcess | None = None
        self.processors: list[ServiceProcess] = []
        self.sync: ServiceProcess | None = None

    def env(self, **extra: str | int) -> dict[str, str]:
        env = service_env(
            self.infra, partitions=self.config.partitions, nats_prefix=self.config.nats_prefix,
            webhook_secret=self.config.webhook_secret, log_level=self.config.log_level, **extra,
        )
        env["FINCART_DATABASE_URL"] = self.database_url
        return {**env, **self.config.extra_env}

    def _service(self, name: str, argv: list[str], port: int, **extra: str | int) -> ServiceProcess:
        port = port or free_port()
        kind = name.split("-")[0]
        return ServiceProcess(
            name=name, argv=argv,
            env={**self.env(http_port=port, service_name=name, **extra), **self.config.service_env.get(kind, {})},
            log_path=self.logdir / f"{name}.log", port=port,
        )

    def processor(self, index: int, generation: int = 0) -> ServiceProcess:
        """Processor replica ``index`` (not started; the replicas share the partitions through leases in
        PostgreSQL); a rescale starts a new generation of them."""
        argv = self.config.processor_command or [find_binary("fincart-processor")]
        name = f"processor-{index}" if not generation else f"processor-{index}-g{generation}"
        return self._service(name, argv, 0)

    def start(self) -> None:
        run_blocking(asyncio.run, ensure_database(self.database_url))
        upgrade(self.database_url)
        try:
            ingest = self.config.ingest_command or [find_binary("fincart-ingest")]
            self.ingest = self._service("ingest", ingest, self.config.ingest_port)
            self.ingest.start()
            # in place: a rescale swaps them too
            self.processors[:] = [self.processor(i) for i in range(self.config.processors)]
            for proc in self.processors:
                proc.start()
            if self.config.with_sync:
                sync = self.config.sync_command or [find_binary("fincart-sync")]
                self.sync = self._service("sync", sync, self.config.sync_port)
                self.sync.start()
        except BaseException:
            self.stop()
            raise

    def services(self) -> list[ServiceProcess]:
        return [s for s in (self.ingest, *self.processors, self.sync) if s is not None]

    def stop(self) -> None:
        for service in reversed(self.services()):
            service.stop()

    @property
    def ingest_url(self) -> str:
        assert self.ingest
        return self.ingest.base_url

    @property
    def sync_url(self) -> str | None:
        return self.sync.base_url if self.sync else None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fincart-dev", description="Run the FinCart stack locally.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything in the foreground; Ctrl-C stops it all")
    up.add_argument("--processors", type=int, default=1, help="processor replicas (default 1)")
    up.add_argument("--partitions", type=int, default=int(os.environ.get("FINCART_PARTITIONS", "16")))
    up.add_argument("--ingest-port", type=int, default=8080)
    up.add_argument("--sync-port", type=int, default=8082)
    up.add_argument("--logdir", type=Path, default=Path(".fincart-dev"), help="service logs go here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.processors < 1:
        print("fincart-dev: --processors must be >= 1", file=sys.stderr)
        raise SystemExit(2)
    args.logdir.mkdir(parents=True, exist_ok=True)
    config = StackConfig(
        processors=args.processors, partitions=args.partitions, ingest_port=args.ingest_port,
        sync_port=args.sync_port, webhook_secret=os.environ.get("FINCART_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        infra = start_infra()
    except (StackError, OSError) as exc:
        print(f"fincart-dev: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    stack = DevStack(config, infra, args.logdir)
    try:
        stack.start()
        print(f"NATS      {infra.nats_url}{' (embedded)' if 'nats' in infra.embedded else ''}")
        print(f"Redis     {infra.redis_url}{' (embedded)' if 'redis' in infra.embedded else ''}")
        print(f"Postgres  {stack.database_url}{' (embedded)' if 'postgres' in infra.embedded else ''}")
        print(f"Ingest    {stack.ingest_url}/webhooks/shopify   (secret: FINCART_WEBHOOK_SECRET)")
        if stack.sync_url:
            print(f"Sync      {stack.sync_url}/   live page, {stack.sync_url}/orders, ws {stack.sync_url}/sync")
        print(f"Logs      {args.logdir}/   Ctrl-C stops everything", flush=True)
        while not stop.wait(1.0):
            dead = [s.name for s in stack.services() if not s.running]
            if dead:
                print(f"fincart-dev: {', '.join(dead)} exited; see {args.logdir}", file=sys.stderr)
                raise SystemExit(1)
    except StackError as exc:
        print(f"fincart-dev: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    finally:
        stack.stop()
        infra.stop()
