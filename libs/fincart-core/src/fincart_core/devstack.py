"""``fincart-dev up``: the whole FinCart stack on one machine, in the foreground.

:class:`DevStack` is also what ``fincart-chaos run --local`` and the end-to-end tests start: infra
(configured or embedded), the migrated database, ingest, N processor replicas and sync, and with
``ingress`` nginx in front of ingest and sync with the chart's Ingress rules (fincart_core.ingress_proxy).
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
from fincart_core.ingress_proxy import IngressRules, NginxIngress
from fincart_core.localstack import (
    Infra,
    ManagedProcess,
    ServiceProcess,
    StackError,
    console_script,
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
    ingress: bool = False  # nginx in front of ingest and sync, as the chart's Ingress
    ingress_port: int = 0  # 0: a free port
    ingress_host: str = ""  # the Ingress rule's host; empty: any host


class DevStack:
    def __init__(self, config: StackConfig, infra: Infra, logdir: Path) -> None:
        self.config = config
        self.infra = infra
        self.logdir = logdir
        self.database_url = with_database(infra.database_url, config.database)
        self.ingest: ServiceProcess | None = None
        self.processors: list[ServiceProcess] = []
        self.sync: ServiceProcess | None = None
        self.ingress: NginxIngress | None = None
        # the services get the proxy's numbers explicitly: both sides use the same ones
        self.ingress_rules = IngressRules.from_env({**os.environ, **config.extra_env}, config.ingress_host) if (
            config.ingress) else None

    def env(self, **extra: str | int) -> dict[str, str]:
        env = service_env(
            self.infra, partitions=self.config.partitions, nats_prefix=self.config.nats_prefix,
            webhook_secret=self.config.webhook_secret, log_level=self.config.log_level, **extra,
        )
        env["FINCART_DATABASE_URL"] = self.database_url
        rules = self.ingress_rules.service_env() if self.ingress_rules else {}
        return {**env, **rules, **self.config.extra_env}

    def _service(self, name: str, argv: list[str], port: int, **extra: str | int) -> ServiceProcess:
        port = port or free_port()
        return ServiceProcess(
            name=name, argv=argv, env=self.env(http_port=port, service_name=name, **extra),
            log_path=self.logdir / f"{name}.log", port=port,
        )

    def start(self) -> None:
        run_blocking(asyncio.run, ensure_database(self.database_url))
        upgrade(self.database_url)
        try:
            self.ingest = self._service("ingest", [console_script("fincart-ingest")], self.config.ingest_port)
            self.ingest.start()
            n = self.config.processors
            processor = self.config.processor_command or [console_script("fincart-processor")]
            self.processors = [
                self._service(f"processor-{i}", processor, 0, replicas=n, replica_index=i)
                for i in range(n)
            ]
            for proc in self.processors:
                proc.start()
            if self.config.with_sync:
                self.sync = self._service("sync", [console_script("fincart-sync")], self.config.sync_port)
                self.sync.start()
            if self.ingress_rules:
                upstreams = {"ingest": self.ingest.port, **({"sync": self.sync.port} if self.sync else {})}
                self.ingress = NginxIngress(self.logdir, self.ingress_rules, upstreams, self.config.ingress_port)
                self.ingress.start()
        except BaseException:
            self.stop()
            raise

    def services(self) -> list[ServiceProcess]:
        return [s for s in (self.ingest, *self.processors, self.sync) if s is not None]

    def processes(self) -> list[ManagedProcess]:
        return [*self.services(), *([self.ingress] if self.ingress else [])]

    def stop(self) -> None:
        for process in reversed(self.processes()):
            process.stop()

    @property
    def ingest_url(self) -> str:
        assert self.ingest
        return self.ingest.base_url

    @property
    def sync_url(self) -> str | None:
        return self.sync.base_url if self.sync else None

    @property
    def public_ingest_url(self) -> str:
        """Where shops send webhooks: the ingress when there is one, else ingest itself."""
        return self.ingress.base_url if self.ingress else self.ingest_url

    @property
    def public_sync_url(self) -> str | None:
        return self.ingress.base_url if self.ingress and self.sync else self.sync_url


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fincart-dev", description="Run the FinCart stack locally.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything in the foreground; Ctrl-C stops it all")
    up.add_argument("--processors", type=int, default=1, help="processor replicas (default 1)")
    up.add_argument("--partitions", type=int, default=int(os.environ.get("FINCART_PARTITIONS", "16")))
    up.add_argument("--ingest-port", type=int, default=8080)
    up.add_argument("--sync-port", type=int, default=8082)
    up.add_argument("--logdir", type=Path, default=Path(".fincart-dev"), help="service logs go here")
    up.add_argument("--ingress", action="store_true",
                    help="put nginx in front of ingest and sync with the chart's Ingress rules")
    up.add_argument("--ingress-port", type=int, default=8000, help="port of the ingress (with --ingress)")
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
        ingress=args.ingress, ingress_port=args.ingress_port,
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
        if stack.ingress:
            rules = stack.ingress.rules
            print(f"Ingress   {stack.ingress.base_url}/   nginx: /webhooks -> ingest; /sync, /orders, / -> sync; "
                  f"body limit {rules.body_limit_bytes} B, timeouts {rules.timeout_s}s")
        print(f"Logs      {args.logdir}/   Ctrl-C stops everything", flush=True)
        while not stop.wait(1.0):
            dead = [s.name for s in stack.processes() if not s.running]
            if dead:
                print(f"fincart-dev: {', '.join(dead)} exited; see {args.logdir}", file=sys.stderr)
                raise SystemExit(1)
    except StackError as exc:
        print(f"fincart-dev: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    finally:
        stack.stop()
        infra.stop()
