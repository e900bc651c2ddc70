"""``fincart-dev up``: the whole FinCart stack on one machine, in the foreground.

:class:`DevStack` is also what ``fincart-chaos run --local`` and the end-to-end tests start: infra
(configured or embedded), the migrated database, ingest, N processor replicas and sync, and with
``ingress`` nginx in front of ingest and sync with the chart's Ingress rules (fincart_devstack.ingress_proxy).
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

from fincart_core.auth import new_token, token_hash
from fincart_core.blocking import run_blocking
from fincart_core.db.admin import ensure_database, with_database
from fincart_core.db.migrate import upgrade

from fincart_devstack.credentials import redact
from fincart_devstack.ingress_proxy import IngressRules, NginxIngress
from fincart_devstack.localstack import (
    Infra,
    ManagedProcess,
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
    read_token: str = field(default_factory=new_token)  # the bearer token sync accepts (only its hash is passed)
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
        self.ingress_rules = (
            IngressRules.from_env({**os.environ, **config.extra_env}, config.ingress_host) if (config.ingress) else None
        )

    def env(self, component: str = "admin", **extra: str | int) -> dict[str, str]:
        """A service's environment; ``component`` picks its NATS user when the infra has credentials."""
        env = service_env(
            self.infra,
            component,
            partitions=self.config.partitions,
            nats_prefix=self.config.nats_prefix,
            webhook_secret=self.config.webhook_secret,
            log_level=self.config.log_level,
            **extra,
        )
        env["FINCART_DATABASE_URL"] = self.database_url
        rules = self.ingress_rules.service_env() if self.ingress_rules else {}
        return {**env, **rules, **self.config.extra_env}

    def _service(self, name: str, argv: list[str], port: int, **extra: str | int) -> ServiceProcess:
        port = port or free_port()
        component = name.split("-")[0]  # processor-1 -> processor
        return ServiceProcess(
            name=name,
            argv=argv,
            env={
                **self.env(component, http_port=port, service_name=name, **extra),
                **self.config.service_env.get(component, {}),
            },
            log_path=self.logdir / f"{name}.log",
            port=port,
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
                self.sync = self._service(
                    "sync", sync, self.config.sync_port, read_token_hashes=token_hash(self.config.read_token)
                )
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
    up.add_argument(
        "--no-credentials",
        action="store_true",
        help="use FINCART_NATS_URL/FINCART_REDIS_URL (or embedded servers) without per-component users",
    )
    up.add_argument(
        "--ingress", action="store_true", help="put nginx in front of ingest and sync with the chart's Ingress rules"
    )
    up.add_argument("--ingress-port", type=int, default=8000, help="port of the ingress (with --ingress)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.processors < 1:
        print("fincart-dev: --processors must be >= 1", file=sys.stderr)
        raise SystemExit(2)
    args.logdir.mkdir(parents=True, exist_ok=True)
    config = StackConfig(
        processors=args.processors,
        partitions=args.partitions,
        ingest_port=args.ingest_port,
        sync_port=args.sync_port,
        webhook_secret=os.environ.get("FINCART_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
        read_token=os.environ.get("FINCART_SYNC_TOKEN") or new_token(),
        ingress=args.ingress,
        ingress_port=args.ingress_port,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        infra = start_infra(credentials=not args.no_credentials)
    except (StackError, OSError) as exc:
        print(f"fincart-dev: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    stack = DevStack(config, infra, args.logdir)
    try:
        stack.start()
        print(f"NATS      {redact(infra.nats_url)}{' (embedded)' if 'nats' in infra.embedded else ''}")
        print(f"Redis     {redact(infra.redis_url)}{' (embedded)' if 'redis' in infra.embedded else ''}")
        print(f"Postgres  {stack.database_url}{' (embedded)' if 'postgres' in infra.embedded else ''}")
        print(f"Ingest    {stack.ingest_url}/webhooks/shopify   (secret: FINCART_WEBHOOK_SECRET)")
        if stack.sync_url:
            print(f"Sync      {stack.sync_url}/   live page, {stack.sync_url}/orders, ws {stack.sync_url}/sync")
            print(
                f"Token     export FINCART_SYNC_TOKEN={config.read_token}   (read token for /orders, /sync, "
                "the live page; set FINCART_SYNC_TOKEN before `up` to keep one)"
            )
        if stack.ingress:
            rules = stack.ingress.rules
            print(
                f"Ingress   {stack.ingress.base_url}/   nginx: /webhooks -> ingest; /sync, /orders, / -> sync; "
                f"body limit {rules.body_limit_bytes} B, timeouts {rules.timeout_s}s"
            )
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
