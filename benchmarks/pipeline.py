"""Pipeline benchmark: ingest over HTTP, the processor's drain and the seed scenario, against raw limits.

Real services run as subprocesses against the local (or embedded) NATS JetStream, Redis and PostgreSQL,
each phase on its own database and stream prefix (removed afterwards, with ingest's Redis marks):

1. HTTP. fincart-chaos's load client (aiohttp, keep-alive, ``--concurrency`` in flight) sends the same
   signed webhooks first to a bare FastAPI endpoint served by uvicorn in a subprocess (the raw HTTP limit),
   then to the real ingest process, with no processor running: ratio ingest/bare, ingest p50/p99 latency,
   CPU per request of each server process.
2. PostgreSQL. The processor's own orders upsert (unnest, one transaction per batch) of the same webhooks'
   rows into a scratch schema with asyncpg, as many connections as the processor's pool, median of three
   passes (``raw_upsert_rps``, for reference).
3. Drain. The webhooks ingest left in JetStream are drained by one processor; the same backlog, published
   straight to streams of their own, by the same-work baseline (same_work.py: the processor's per-batch work
   with the same libraries and nothing else), once acking every message and once with AckAll, and by two
   processors. ``drain_ratio`` = processor / baseline (per-message acks, as the processor). The rate runs
   from the moment every partition has begun (its first batch's transaction) to the moment the last audit row is visible
   (PostgreSQL's clock, polled every 50 ms); CPU per webhook is the draining processes' /proc CPU time from
   the moment all are ready until every message is acked.
4. Seed. 100 concurrent conflicting webhooks for one order, ingest and a processor running: the time until
   all are answered 200, then from the last answer until the order row is final (the newest webhook
   applied and every webhook audited; its version is the number applied, 100 only if none arrived late).

The last line printed is one JSON object.

    uv run python benchmarks/pipeline.py --quick

``--scale`` drains backlogs of ``--scale-sizes`` webhooks (10k, 100k, 1M; every webhook a new order) in turn
into one growing orders table, one processor started per step after its backlog is published; one JSON line
per step: drain rate, CPU per webhook, p99 batch apply time (the processor's /metrics histogram), the
processor's peak RSS, orders and audit_log table and index sizes.

    uv run python benchmarks/pipeline.py --scale --scale-sizes 10000,100000

``--capacity`` drains one backlog (``--webhooks``) with 1 and 2 processors, against an embedded nats-server
and against an embedded 3-node cluster (R3 streams), with the CPU per webhook of the processors, the
nats-servers and the database's PostgreSQL backends; one JSON line each (docs/capacity.md uses them).

    uv run python benchmarks/pipeline.py --capacity --webhooks 20000

``--ack-policies`` drains one backlog (``--webhooks``) with one processor per FINCART_ACK_POLICY, ``explicit``
and ``all`` taking turns for ``--rounds`` rounds, against an embedded nats-server of its own: drain rate and the
CPU per webhook of the processor, the nats-server and PostgreSQL, medians and AckAll / explicit ratios.

    uv run python benchmarks/pipeline.py --ack-policies --webhooks 30000 --rounds 8

``--sync-cost`` measures only what ``sync_interval: always`` (the chart's NATS setting) costs: the HTTP phase
of the real ingest (answers are sent after JetStream's PubAck) against embedded nats-servers started by this
run: one with the server's default fsync (every 2 minutes), one fsyncing every write, and with ``--cluster``
the chart's default, a 3-node cluster with R3 streams and ``sync_interval: always``. The brokers take turns
for ``--rounds`` rounds (the machine's noise hits all of them); the median rate of each is reported, with its
ratio to the default broker.

    uv run python benchmarks/pipeline.py --sync-cost --cluster --webhooks 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import nats
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.load import run_load
from fincart_chaos.report import percentiles
from fincart_chaos.workload import SEED_ORDER, Webhook, make_webhook
from fincart_chaos.workload import Request as LoadRequest
from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.db.admin import drop_database, ensure_database, with_database
from fincart_core.db.migrate import upgrade
from fincart_core.partition import Topology, partition_for
from fincart_core.settings import to_asyncpg_url
from fincart_core.streams import StreamLimits, delete_streams, ensure_streams, servers
from fincart_devstack.localstack import (
    READY_TIMEOUT_S,
    EmbeddedNats,
    Infra,
    ManagedProcess,
    NatsCluster,
    ServiceProcess,
    StackError,
    find_binary,
    free_port,
    service_env,
    start_infra,
)
from fincart_processor.order_store import UPSERT_ORDERS
from fincart_processor.settings import ProcessorSettings
from nats.js import JetStreamContext
from procstat import cpu_seconds, peak_rss_mb

SECRET = "bench-secret"
PARTITIONS = 16
POLL_S = 0.05
SEED = 7


# ---- the bare endpoint (its own process: ``pipeline.py --serve-bare``, port from FINCART_HTTP_PORT) ----


def bare_app() -> FastAPI:
    """The raw HTTP limit: the same route and answer shape as ingest, and nothing else."""
    app = FastAPI()

    @app.post("/webhooks/shopify")
    async def webhook(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "accepted", "webhookId": request.headers.get("x-shopify-webhook-id")})

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_bare(port: int) -> None:
    # the same uvicorn call as ingest: uvloop and httptools when installed, no access log (access_log=False: with
    # the default True uvicorn still builds each line's arguments, a cost ingest does not pay)
    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_config=None, access_log=False)


# ---- helpers ----------------------------------------------------------------------------------------


def workload(count: int, orders: int) -> list[Webhook]:
    """Update-major (update 0 of every order, then update 1, ...), as the chaos workload sends them."""
    return [make_webhook(f"bench-{i % orders}", i // orders, SEED) for i in range(count)]


def upsert_row(w: Webhook) -> tuple[object, ...]:
    """The orders row the processor writes for a webhook (UPSERT_ORDERS's parameter order)."""
    return (w.order_id, w.status, w.total_price, w.shipping_fee, w.index + 1, w.updated_at, w.webhook_id)


class BaselineProcess(ManagedProcess):
    """same_work.py, ready when it has printed ``ready`` (connected to NATS and PostgreSQL)."""

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ready" not in self.log_tail():
            if not self.running or time.monotonic() > deadline:
                raise StackError(f"{self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.05)


class Bench:
    """One run: its infra, names, services and the cleanup of everything it created."""

    def __init__(self, args: argparse.Namespace, infra: Infra, workdir: Path) -> None:
        self.args, self.infra, self.workdir = args, infra, workdir
        self.name = f"bench_pipe_{uuid.uuid4().hex[:8]}"
        self.services: list[ManagedProcess] = []
        self.databases: list[str] = []
        self.topologies: list[Topology] = []

    async def prepare(self, suffix: str) -> tuple[str, Topology]:
        """A migrated database and stream names of their own for one phase."""
        database_url = with_database(self.infra.database_url, f"{self.name}_{suffix}")
        topology = Topology(PARTITIONS, f"{self.name}_{suffix}".replace("_", "-"))
        self.databases.append(database_url)
        self.topologies.append(topology)
        await ensure_database(database_url)
        await asyncio.to_thread(upgrade, database_url)
        return database_url, topology

    def service(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        port = free_port()
        env = {**(env or {}), "FINCART_HTTP_PORT": str(port)}
        service = ServiceProcess(name=name, argv=argv, env=env, log_path=self.workdir / f"{name}.log", port=port)
        self.services.append(service)
        return service

    def fincart(
        self, name: str, script: str, database_url: str, topology: Topology, **extra: str | int
    ) -> ServiceProcess:
        env = service_env(
            self.infra,
            partitions=PARTITIONS,
            nats_prefix=topology.prefix,
            webhook_secret=SECRET,
            log_level=self.args.log_level,
            service_name=name,
            **extra,
        )
        return self.service(name, [find_binary(script)], {**env, "FINCART_DATABASE_URL": database_url})

    def baseline(self, database_url: str, topology: Topology, pool: int, batch: int, ack: str) -> BaselineProcess:
        """The same-work baseline (same_work.py) on a database and stream of its own."""
        process = BaselineProcess(
            f"baseline-{ack}",
            [
                sys.executable,
                str(Path(__file__).with_name("same_work.py")),
                "--database-url",
                database_url,
                "--nats-url",
                self.infra.nats_url,
                "--prefix",
                topology.prefix,
                "--partitions",
                str(PARTITIONS),
                "--pool",
                str(pool),
                "--batch",
                str(batch),
                "--ack",
                ack,
            ],
            log_path=self.workdir / f"baseline-{ack}.log",
        )
        self.services.append(process)
        return process

    async def cleanup(self) -> None:
        for service in self.services:
            service.stop()
        for database_url in self.databases:
            await drop_database(database_url)
        for topology in self.topologies:
            await delete_streams(self.infra.nats_url, topology)
        redis = aioredis.from_url(self.infra.redis_url)
        try:
            for topology in self.topologies:  # ingest's dedupe marks (they would live for 48 h)
                keys = [k async for k in redis.scan_iter(match=f"{topology.prefix}:fincart:*", count=1000)]
                for start in range(0, len(keys), 1000):
                    await redis.unlink(*keys[start : start + 1000])
        finally:
            await redis.aclose()


async def start(services: Sequence[ServiceProcess]) -> None:
    """Start side by side (each waits for its /readyz): replicas begin their drain together."""
    await asyncio.gather(*(asyncio.to_thread(s.start) for s in services))


# ---- phases -----------------------------------------------------------------------------------------


async def send(url: str, webhooks: Sequence[Webhook], concurrency: int) -> tuple[float, list[LedgerEntry]]:
    """(requests per second, ledger) of one load run; every webhook must end answered 2xx."""
    started = time.perf_counter()
    entries = await run_load([LoadRequest(w, "valid") for w in webhooks], url, SECRET, concurrency=concurrency)
    elapsed = time.perf_counter() - started
    if lost := sum(not e.acked for e in entries):
        raise RuntimeError(f"{lost} of {len(entries)} webhooks to {url} were not answered 2xx")
    return len(entries) / elapsed, entries


async def http_phase(
    server: ServiceProcess, warm: Sequence[Webhook], measured: Sequence[Webhook], concurrency: int
) -> dict:
    """Rate, latency and the server process's CPU per request of the measured requests."""
    await send(server.base_url, warm, concurrency)  # connections, pools and caches warm; not counted
    cpu = cpu_seconds(server.pid or 0)
    rps, entries = await send(server.base_url, measured, concurrency)
    us = 1e6 * (cpu_seconds(server.pid or 0) - cpu) / len(measured)
    latency = percentiles([e.latency_ms for e in entries])
    return {"rps": rps, "p50_ms": latency.p50, "p99_ms": latency.p99, "us_per_request": us}


async def raw_upsert(database_url: str, webhooks: Sequence[Webhook], batch: int, workers: int) -> float:
    """Rows per second of the processor's orders upsert alone, into a fresh scratch copy of the orders table
    (median of three passes). A statement may touch an order once: batches are cut within one update round."""
    rounds: dict[int, list[tuple[object, ...]]] = {}
    for w in webhooks:
        rounds.setdefault(w.index, []).append(upsert_row(w))
    batches = [rows[i : i + batch] for rows in rounds.values() for i in range(0, len(rows), batch)]
    pool = await asyncpg.create_pool(
        to_asyncpg_url(database_url), min_size=workers, max_size=workers, server_settings={"search_path": "bench_raw"}
    )

    async def worker(queue: Iterator[list[tuple[object, ...]]]) -> None:
        async with pool.acquire() as conn:
            for rows in queue:  # workers share one iterator
                async with conn.transaction():
                    await conn.fetch(UPSERT_ORDERS, *[list(column) for column in zip(*rows, strict=True)])

    rates: list[float] = []
    try:
        for _ in range(3):
            await pool.execute(
                "DROP SCHEMA IF EXISTS bench_raw CASCADE; CREATE SCHEMA bench_raw; "
                "CREATE TABLE bench_raw.orders (LIKE public.orders INCLUDING ALL)"
            )
            queue = iter(batches)
            started = time.perf_counter()
            await asyncio.gather(*(worker(queue) for _ in range(workers)))
            rates.append(len(webhooks) / (time.perf_counter() - started))
        await pool.execute("DROP SCHEMA bench_raw CASCADE")
    finally:
        await pool.close()
    return statistics.median(rates)


@dataclass
class Drained:
    """A drain's rate, the CPU per webhook of its processes and of the other processes watched (PostgreSQL's
    backends of the database always), and the processes' peak RSS."""

    rps: float
    us_per_webhook: float
    others_us_per_webhook: dict[str, float]
    peak_rss_mb: list[float]


BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


def cpu_of(pids: Iterable[int]) -> float:
    """CPU seconds of the processes still alive (a backend may close between two polls)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


async def drain(
    nats_url: str,
    database_url: str,
    topology: Topology,
    processes: Sequence[ManagedProcess],
    backlog: int,
    already: int = 0,
    watch: Mapping[str, Sequence[int]] | None = None,
) -> Drained:
    """Webhooks per second of ``processes`` (processors or the baseline) draining ``backlog`` messages already in
    JetStream, from the moment every partition has begun (its first transaction: the processes start a few
    hundred ms apart and share the partitions through leases) to the moment the last audit row is visible, on
    PostgreSQL's clock. CPU per webhook: the processes' CPU time (and that of ``watch``'s and of the database's
    backends) from the first poll after every process is ready (imports and start-up are over) until every
    message is acked (the last events published), over the webhooks audited after that first poll. Not from
    some later poll to the last audit row: up to partitions x batch (8,000) webhooks are fetched, parsed and
    applied before they are audited and published and acked after, work that such a window leaves out, which
    halved the figure of a 10,000 backlog. ``already``: webhooks audited before (a --scale step's earlier
    steps), not counted."""
    db = await asyncpg.connect(to_asyncpg_url(database_url))
    nc = await nats.connect(servers(nats_url))
    try:
        since = await db.fetchval("SELECT clock_timestamp()")
        # polled while they start: the first of several replicas may drain much before the last is ready
        starting = asyncio.create_task(start(processes))

        async def cpu_now() -> dict[str, float]:
            backends = [r["pid"] for r in await db.fetch(BACKENDS)]
            return {
                "processes": cpu_of(p.pid for p in processes if p.pid),
                "postgres": cpu_of(backends),
                **{name: cpu_of(group) for name, group in (watch or {}).items()},
            }

        deadline = time.monotonic() + max(60.0, backlog / 100)
        progress = "SELECT count(*) AS n, clock_timestamp() AS now FROM audit_log"
        window: tuple[int, dict[str, float]] | None = None  # (audited, CPU seconds by group) when all were ready
        while (row := await db.fetchrow(progress))["n"] < already + backlog or not starting.done():
            if starting.done():
                starting.result()  # a process that failed to start fails the drain
                window = window or (row["n"], await cpu_now())
            if time.monotonic() > deadline:
                raise RuntimeError(f"drain stalled: {row['n']} of {backlog} webhooks audited")
            await asyncio.sleep(POLL_S)
        starting.result()
        n0, cpu0 = window or (row["n"], await cpu_now())
        js = nc.jetstream()
        while not await all_acked(js, topology):
            if time.monotonic() > deadline:
                raise RuntimeError("drain stalled: every webhook audited, not every message acked")
            await asyncio.sleep(POLL_S)
        cpu_end = await cpu_now()
        rss = [peak_rss_mb(p.pid or 0) for p in processes]
        audited = await db.fetch("SELECT shopify_order_id, created_at FROM audit_log WHERE created_at > $1", since)
    finally:
        await nc.close()
        await db.close()
    firsts: dict[int, datetime] = {}  # the first transaction of each partition, whichever replica holds it
    for order_id, at in audited:
        partition = partition_for(order_id, PARTITIONS)
        firsts[partition] = min(firsts.get(partition, at), at)
    begun = max(firsts.values())
    rate = sum(at >= begun for _, at in audited) / (row["now"] - begun).total_seconds()
    per_webhook = {
        name: 1e6 * (cpu_end[name] - cpu0.get(name, cpu_end[name])) / max(1, already + backlog - n0) for name in cpu_end
    }
    return Drained(rate, per_webhook.pop("processes"), per_webhook, rss)


async def all_acked(js: JetStreamContext, topology: Topology) -> bool:
    """Every partition consumer has delivered and acked everything (created by the draining processes)."""
    for p in range(topology.partitions):
        info = await js.consumer_info(topology.orders_stream, topology.consumer_name(p))
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def fill(nats_url: str, topology: Topology, webhooks: Sequence[Webhook], replicas: int = 1) -> None:
    """Publish onto ORDERS what ingest would (message, Nats-Msg-Id, a trace context), without HTTP."""
    nc = await nats.connect(servers(nats_url))
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology, replace(StreamLimits.from_settings(), replicas=replicas))
        for start_at in range(0, len(webhooks), 1000):
            await asyncio.gather(
                *(
                    js.publish(
                        topology.webhook_subject_for(w.order_id),
                        WebhookMessage(
                            webhook_id=w.webhook_id,
                            topic="orders/updated",
                            shop_domain="chaos.myshopify.com",
                            triggered_at=datetime.now(UTC).isoformat(),
                            received_at=datetime.now(UTC),
                            order=w.payload,
                        )
                        .model_dump_json()
                        .encode(),
                        headers={
                            "Nats-Msg-Id": w.webhook_id,
                            "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
                        },
                    )
                    for w in webhooks[start_at : start_at + 1000]
                )
            )
    finally:
        await nc.close()


async def seed(ingest_url: str, database_url: str, updates: int) -> dict:
    """The seed scenario: answered, then applied."""
    hooks = [make_webhook(SEED_ORDER, i, SEED) for i in range(updates)]
    random.Random(SEED).shuffle(hooks)
    newest = max(hooks, key=lambda w: w.sort_key).webhook_id
    db = await asyncpg.connect(to_asyncpg_url(database_url))
    try:
        started = time.perf_counter()
        await send(ingest_url, hooks, concurrency=updates)
        answered = time.perf_counter()
        deadline = time.monotonic() + 60
        while True:
            row = await db.fetchrow(
                "SELECT (SELECT count(*) FROM audit_log WHERE shopify_order_id = $1) AS audited, o.version, "
                "o.last_webhook_id FROM orders o WHERE o.shopify_order_id = $1",
                SEED_ORDER,
            )
            if row and row["audited"] == updates and row["last_webhook_id"] == newest:
                return {
                    "answer_s": answered - started,
                    "drain_s": time.perf_counter() - answered,
                    "version": row["version"],
                }
            if time.monotonic() > deadline:
                raise RuntimeError(f"seed order not final after 60 s: {dict(row) if row else None}")
            await asyncio.sleep(0.005)
    finally:
        await db.close()


# ---- main -------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="fincart-bench-pipeline-"))
    infra = start_infra(use_defaults_if_reachable=True, workdir=workdir)
    bench = Bench(args, infra, workdir)
    pool_size = ProcessorSettings.model_fields["db_pool_size"].default
    batch = ProcessorSettings.model_fields["batch_size"].default
    hooks = workload(args.warmup + args.webhooks, args.orders)
    warm, measured = hooks[: args.warmup], hooks[args.warmup :]
    try:
        bare = bench.service("bare-fastapi", [sys.executable, __file__, "--serve-bare"])
        await start([bare])
        bare_http = await http_phase(bare, warm, measured, args.concurrency)
        bare.stop()

        db_a, topo_a = await bench.prepare("a")
        ingest = bench.fincart("ingest", "fincart-ingest", db_a, topo_a)
        await start([ingest])
        ingest_http = await http_phase(ingest, warm, measured, args.concurrency)

        raw_rps = await raw_upsert(db_a, hooks, batch, pool_size)
        drain_1 = await drain(
            infra.nats_url,
            db_a,
            topo_a,
            [bench.fincart("processor-0", "fincart-processor", db_a, topo_a)],
            len(hooks),
        )
        seeded = await seed(ingest.base_url, db_a, args.seed_webhooks)
        for service in bench.services:
            service.stop()
        baselines: dict[str, Drained] = {}
        for ack in ("each", "all"):  # the same backlog, published straight to a stream of its own
            db_c, topo_c = await bench.prepare(f"base_{ack}")
            await fill(infra.nats_url, topo_c, hooks)
            baselines[ack] = await drain(
                infra.nats_url, db_c, topo_c, [bench.baseline(db_c, topo_c, pool_size, batch, ack)], len(hooks)
            )

        drain_2 = None
        if not args.no_drain_2:
            db_b, topo_b = await bench.prepare("b")
            await fill(infra.nats_url, topo_b, hooks)
            drain_2 = (
                await drain(
                    infra.nats_url,
                    db_b,
                    topo_b,
                    [bench.fincart(f"processor-b{i}", "fincart-processor", db_b, topo_b) for i in range(2)],
                    len(hooks),
                )
            ).rps
        result: dict = {
            "bare_fastapi_rps": round(bare_http["rps"]),
            "ingest_rps": round(ingest_http["rps"]),
            "ingest_ratio": round(ingest_http["rps"] / bare_http["rps"], 3),
            "ingest_p50_ms": round(ingest_http["p50_ms"], 2),
            "ingest_p99_ms": round(ingest_http["p99_ms"], 2),
            "bare_p50_ms": round(bare_http["p50_ms"], 2),
            "bare_p99_ms": round(bare_http["p99_ms"], 2),
            "ingest_us_per_webhook": round(ingest_http["us_per_request"], 1),
            "bare_us_per_request": round(bare_http["us_per_request"], 1),
            "raw_upsert_rps": round(raw_rps),
            "drain_rps": round(drain_1.rps),
            "drain_rps_1": round(drain_1.rps),
            "drain_rps_2": round(drain_2) if drain_2 else None,
            "baseline_rps": round(baselines["each"].rps),
            "drain_ratio": round(drain_1.rps / baselines["each"].rps, 3),
            "us_per_webhook": round(drain_1.us_per_webhook, 1),
            "baseline_us_per_webhook": round(baselines["each"].us_per_webhook, 1),
            "cpu_ratio": round(baselines["each"].us_per_webhook / drain_1.us_per_webhook, 3)
            if drain_1.us_per_webhook
            else None,
            "baseline_ackall_rps": round(baselines["all"].rps),
            "baseline_ackall_us_per_webhook": round(baselines["all"].us_per_webhook, 1),
            "ackall_speedup": round(baselines["all"].rps / baselines["each"].rps, 3),
            "processor_peak_rss_mb": round(drain_1.peak_rss_mb[0], 1),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "seed_answer_s": round(seeded["answer_s"], 3),
            "seed_drain_s": round(seeded["drain_s"], 3),
            "seed_version": seeded["version"],
            "seed_webhooks": args.seed_webhooks,
            "webhooks": args.webhooks,
            "backlog": len(hooks),
            "orders": args.orders,
            "concurrency": args.concurrency,
            "partitions": PARTITIONS,
            "batch_size": batch,
            "cpus": os.cpu_count(),
        }
    finally:
        try:
            await bench.cleanup()
        finally:
            infra.stop()
    return result


def counter(metrics_text: str, name: str) -> int | None:
    """A counter's value in one process's /metrics text."""
    found = re.search(rf"^{name} (\S+)$", metrics_text, re.MULTILINE)
    return round(float(found.group(1))) if found else None


def histogram_quantile(metrics_text: str, name: str, q: float) -> float | None:
    """Prometheus's histogram_quantile over one process's cumulative buckets (linear within a bucket)."""
    buckets = sorted(
        (float("inf") if le == "+Inf" else float(le), float(value))
        for le, value in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', metrics_text, re.MULTILINE)
    )
    if not buckets or not buckets[-1][1]:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            return lower if upper == float("inf") else lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return None


async def scale(args: argparse.Namespace) -> None:
    """--scale: backlogs of each size drained in turn by one processor into one growing orders table (every
    webhook a new order); one JSON line per step."""
    workdir = Path(tempfile.mkdtemp(prefix="fincart-bench-scale-"))
    infra = start_infra(use_defaults_if_reachable=True, workdir=workdir)
    bench = Bench(args, infra, workdir)
    try:
        database_url, topology = await bench.prepare("scale")
        processor = bench.fincart("processor-scale", "fincart-processor", database_url, topology)
        db = await asyncpg.connect(to_asyncpg_url(database_url))
        done = 0
        try:
            for size in args.scale_sizes:
                for at in range(done, done + size, 20_000):  # published while no processor runs
                    await fill(
                        infra.nats_url,
                        topology,
                        [make_webhook(f"scale-{i}", 0, SEED) for i in range(at, min(at + 20_000, done + size))],
                    )
                drained = await drain(infra.nats_url, database_url, topology, [processor], size, already=done)
                metrics_text = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"{processor.base_url}/metrics", timeout=10).read().decode()
                )
                processor.stop()
                done += size
                sizes = await db.fetchrow(
                    "SELECT (SELECT count(*) FROM orders) AS orders, pg_table_size('orders') AS orders_table, "
                    "pg_indexes_size('orders') AS orders_indexes, pg_table_size('audit_log') AS audit_table, "
                    "pg_indexes_size('audit_log') AS audit_indexes"
                )
                p99 = histogram_quantile(metrics_text, "fincart_processor_apply_seconds", 0.99)
                print(
                    json.dumps(
                        {
                            "backlog": size,
                            "orders_rows": sizes["orders"],
                            "drain_rps": round(drained.rps),
                            "us_per_webhook": round(drained.us_per_webhook, 1),
                            "p99_batch_apply_ms": round(1000 * p99, 1) if p99 is not None else None,
                            # webhooks applied again (an ack_wait expired, or a recovery): work not in drain_rps
                            "redeliveries": counter(metrics_text, "fincart_processor_redeliveries_total"),
                            "processor_peak_rss_mb": round(drained.peak_rss_mb[0], 1),
                            **{
                                f"{k}_mb": round(sizes[k] / 2**20, 1)
                                for k in ("orders_table", "orders_indexes", "audit_table", "audit_indexes")
                            },
                            "load_average_1m": round(os.getloadavg()[0], 2),
                        }
                    ),
                    flush=True,
                )
        finally:
            await db.close()
    finally:
        try:
            await bench.cleanup()
        finally:
            infra.stop()


async def capacity(args: argparse.Namespace) -> None:
    """--capacity: the same backlog drained by 1 and 2 processors, against one embedded nats-server and a
    3-node cluster (R3 streams), with the CPU per webhook of processors, nats-servers and PostgreSQL backends;
    one JSON line per (nodes, processors)."""
    hooks = workload(args.webhooks, args.orders)
    for nodes in (1, 3):
        workdir = Path(tempfile.mkdtemp(prefix="fincart-bench-capacity-"))
        base = start_infra(
            {k: v for k, v in os.environ.items() if k != "FINCART_NATS_URL"},
            use_defaults_if_reachable=True,
            workdir=workdir,
        )
        if nodes == 1:
            single = EmbeddedNats(workdir / "nats")
            cluster, brokers, url = None, [single], single.url
        else:
            cluster = NatsCluster(workdir / "cluster", nodes)
            brokers, url = cluster.nodes, cluster.url
        infra = Infra(
            url,
            base.redis_url,
            base.database_url,
            nats_cluster=cluster,
            embedded={b.name: b for b in brokers},
            workdir=workdir,
        )
        bench = Bench(args, infra, workdir)
        try:
            for broker in brokers:
                broker.start()
            if cluster:
                cluster.wait_ready()
            for replicas in (1, 2):
                database_url, topology = await bench.prepare(f"n{nodes}p{replicas}")
                await fill(infra.nats_url, topology, hooks, infra.stream_replicas)
                drained = await drain(
                    infra.nats_url,
                    database_url,
                    topology,
                    [
                        bench.fincart(f"processor-n{nodes}-{i}", "fincart-processor", database_url, topology)
                        for i in range(replicas)
                    ],
                    len(hooks),
                    watch={"nats": [b.pid or 0 for b in brokers]},
                )
                for service in bench.services:
                    service.stop()
                print(
                    json.dumps(
                        {
                            "nats_nodes": nodes,
                            "stream_replicas": infra.stream_replicas,
                            "processors": replicas,
                            "backlog": len(hooks),
                            "drain_rps": round(drained.rps),
                            "processor_us_per_webhook": round(drained.us_per_webhook, 1),
                            **{
                                f"{name}_us_per_webhook": round(us, 1)
                                for name, us in drained.others_us_per_webhook.items()
                            },
                            "processor_peak_rss_mb": [round(mb, 1) for mb in drained.peak_rss_mb],
                            "load_average_1m": round(os.getloadavg()[0], 2),
                        }
                    ),
                    flush=True,
                )
        finally:
            try:
                await bench.cleanup()
            finally:
                infra.stop()
                base.stop()


ACK_POLICIES = ("explicit", "all")


async def ack_policies(args: argparse.Namespace) -> dict[str, Any]:
    """--ack-policies: the same backlog drained by one processor with each FINCART_ACK_POLICY, taking turns for
    ``--rounds`` rounds (which goes first alternates), against an embedded nats-server of this run so that its
    CPU is this run's alone. Medians per policy, and the median of each round's AckAll / explicit ratio."""
    workdir = Path(tempfile.mkdtemp(prefix="fincart-bench-acks-"))
    base = start_infra(
        {k: v for k, v in os.environ.items() if k != "FINCART_NATS_URL"},
        use_defaults_if_reachable=True,
        workdir=workdir,
    )
    broker = EmbeddedNats(workdir / "nats")
    infra = Infra(broker.url, base.redis_url, base.database_url, embedded={"nats": broker}, workdir=workdir)
    bench = Bench(args, infra, workdir)
    hooks = workload(args.webhooks, args.orders)
    runs: dict[str, list[dict[str, float]]] = {policy: [] for policy in ACK_POLICIES}
    try:
        broker.start()
        for round_ in range(args.rounds):
            for policy in ACK_POLICIES if round_ % 2 == 0 else ACK_POLICIES[::-1]:
                database_url, topology = await bench.prepare(f"{policy}{round_}")
                await fill(infra.nats_url, topology, hooks)
                processor = bench.fincart(
                    f"processor-{policy}-{round_}", "fincart-processor", database_url, topology, ack_policy=policy
                )
                drained = await drain(
                    infra.nats_url, database_url, topology, [processor], len(hooks), watch={"nats": [broker.pid or 0]}
                )
                processor.stop()
                runs[policy].append(
                    {
                        "drain_rps": drained.rps,
                        "us_per_webhook": drained.us_per_webhook,
                        **{f"{k}_us_per_webhook": v for k, v in drained.others_us_per_webhook.items()},
                    }
                )
                print(f"round {round_ + 1} {policy:<8} " + json.dumps(runs[policy][-1]), file=sys.stderr, flush=True)
    finally:
        try:
            await bench.cleanup()
        finally:
            broker.stop()
            base.stop()
    result: dict[str, Any] = {
        "webhooks": args.webhooks,
        "orders": args.orders,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
    }
    for key in runs["explicit"][0]:
        for policy, rounds in runs.items():
            result[f"{policy}_{key}"] = round(statistics.median(r[key] for r in rounds), 1)
        ratios = [a[key] / e[key] for a, e in zip(runs["all"], runs["explicit"], strict=True) if e[key]]
        result[f"{key}_ratio"] = round(statistics.median(ratios), 3) if ratios else None
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    return result


def ack_table(r: dict[str, Any]) -> str:
    rows = [
        ("drain webhooks/s", "drain_rps"),
        ("processor CPU us/webhook", "us_per_webhook"),
        ("nats-server CPU us/webhook", "nats_us_per_webhook"),
        ("PostgreSQL CPU us/webhook", "postgres_us_per_webhook"),
    ]
    lines = [f"{'':<28}{'explicit':>10}{'AckAll':>10}{'ratio':>8}"]
    lines += [
        f"{label:<28}{r[f'explicit_{key}']:>10,.1f}{r[f'all_{key}']:>10,.1f}{r[f'{key}_ratio'] or 0:>8.3f}"
        for label, key in rows
    ]
    lines.append(
        f"medians of {r['rounds']} rounds of {r['webhooks']:,} webhooks over {r['orders']:,} orders, ratio = median "
        f"of the rounds' AckAll / explicit, {r['cpus']} CPUs, load average {r['load_average_1m']}"
    )
    return "\n".join(lines)


BROKERS = {
    "default": "1 server, default fsync (2 min)",
    "always": "1 server, sync_interval: always",
    "cluster": "3 nodes R3, sync_interval: always",
}


async def sync_cost(args: argparse.Namespace) -> dict:
    """Ingest's HTTP rate (PubAck before each answer) against each broker of BROKERS, taking turns."""
    workdir = Path(tempfile.mkdtemp(prefix="fincart-bench-sync-"))
    base = start_infra(
        {k: v for k, v in os.environ.items() if k != "FINCART_NATS_URL"},
        use_defaults_if_reachable=True,
        workdir=workdir,
    )
    brokers: dict[str, Infra] = {}
    hooks = workload(args.warmup + args.webhooks, args.orders)
    rates: dict[str, list[dict]] = {}
    try:
        for name in ("default", "always", "cluster") if args.cluster else ("default", "always"):
            if name == "cluster":
                cluster = NatsCluster(workdir / name, 3, sync_always=True)
                broker_url = cluster.url
                cluster.start()
            else:
                single = EmbeddedNats(workdir / name, sync_always=name == "always")
                single.start()
                broker_url, cluster = single.url, None
            brokers[name] = Infra(
                broker_url,
                base.redis_url,
                base.database_url,
                nats_cluster=cluster,
                embedded={name: single} if cluster is None else dict(enumerate(cluster.nodes)),
            )
        for round_ in range(args.rounds):
            for name, infra in brokers.items():
                bench = Bench(args, infra, workdir)
                try:
                    database_url, topology = await bench.prepare(f"{name}{round_}")
                    ingest = bench.fincart(f"ingest-{name}", "fincart-ingest", database_url, topology)
                    await start([ingest])
                    rates.setdefault(name, []).append(
                        await http_phase(ingest, hooks[: args.warmup], hooks[args.warmup :], args.concurrency)
                    )
                finally:
                    await bench.cleanup()
    finally:
        for infra in brokers.values():
            for process in infra.embedded.values():
                process.stop()
        base.stop()
    result: dict = {
        "webhooks": args.webhooks,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
    }
    default_rps = statistics.median(r["rps"] for r in rates["default"])
    for name, runs in rates.items():
        rps = statistics.median(r["rps"] for r in runs)
        result[f"{name}_rps"] = round(rps)
        result[f"{name}_ratio"] = round(rps / default_rps, 3)
        result[f"{name}_p99_ms"] = round(statistics.median(r["p99_ms"] for r in runs), 2)
    return result


def sync_table(r: dict) -> str:
    lines = [f"{'broker':<36}{'ingest webhooks/s':>18}{'p99 ms':>10}{'ratio':>8}"]
    lines += [
        f"{label:<36}{r[f'{name}_rps']:>18,}{r[f'{name}_p99_ms']:>10.1f}{r[f'{name}_ratio']:>8.2f}"
        for name, label in BROKERS.items()
        if f"{name}_rps" in r
    ]
    lines.append(
        f"median of {r['rounds']} rounds of {r['webhooks']:,} webhooks, concurrency {r['concurrency']}, "
        f"{r['cpus']} CPUs"
    )
    return "\n".join(lines)


def table(r: dict) -> str:
    drain_2 = f"{r['drain_rps_2']:>10,}" if r["drain_rps_2"] else f"{'-':>10}"
    rows = [
        (
            "HTTP webhooks/s",
            f"ingest {r['ingest_rps']:>8,}",
            f"bare FastAPI {r['bare_fastapi_rps']:>8,}",
            f"{r['ingest_ratio']:.2f}",
        ),
        (
            "HTTP p50 / p99 ms",
            f"ingest {r['ingest_p50_ms']:>4.1f} / {r['ingest_p99_ms']:<5.1f}",
            f"bare {r['bare_p50_ms']:>4.1f} / {r['bare_p99_ms']:<5.1f}",
            "",
        ),
        (
            "drain webhooks/s",
            f"1 proc {r['drain_rps_1']:>8,}",
            f"same-work baseline {r['baseline_rps']:>8,}",
            f"{r['drain_ratio']:.2f}",
        ),
        (
            "CPU us per webhook",
            f"1 proc {r['us_per_webhook']:>8.1f}",
            f"same-work baseline {r['baseline_us_per_webhook']:>8.1f}",
            f"{r['cpu_ratio'] or 0:.2f}",
        ),
        (
            "baseline, AckAll",
            f"{r['baseline_ackall_rps']:>8,}/s",
            f"{r['baseline_ackall_us_per_webhook']:>6.1f} us",
            f"{r['ackall_speedup']:.2f}",
        ),
        ("raw upsert rows/s", "", f"{r['raw_upsert_rps']:>8,}", ""),
        ("drain, 2 processors", f"2 proc {drain_2}", "", ""),
        (
            f"seed ({r['seed_webhooks']} concurrent)",
            f"answered {r['seed_answer_s']:.3f} s",
            f"then final {r['seed_drain_s']:.3f} s",
            f"v{r['seed_version']}",
        ),
    ]
    lines = [f"{'':<24}{'measured':<24}{'raw limit (same run)':<32}ratio"]
    lines += [f"{a:<24}{b:<24}{c:<32}{d}" for a, b, c, d in rows]
    lines.append(
        f"{r['backlog']:,} webhooks over {r['orders']:,} orders, concurrency {r['concurrency']}, "
        f"{r['partitions']} partitions, batch {r['batch_size']}, {r['cpus']} CPUs, "
        f"load average {r['load_average_1m']}"
    )
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--serve-bare"]:  # the bare endpoint's own process (port from FINCART_HTTP_PORT)
        serve_bare(int(os.environ["FINCART_HTTP_PORT"]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=40_000, help="measured HTTP requests (and drain backlog)")
    parser.add_argument("--warmup", type=int, default=1000, help="requests sent first and not timed")
    parser.add_argument("--orders", type=int, default=0, help="distinct orders (default: a quarter of --webhooks)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--seed-webhooks", type=int, default=100, help="conflicting webhooks of the seed order")
    parser.add_argument("--no-drain-2", action="store_true", help="skip the drain with two processors")
    parser.add_argument("--log-level", default="WARNING", help="FINCART_LOG_LEVEL of the services")
    parser.add_argument("--quick", action="store_true", help="12,000 webhooks (finishes in under a minute)")
    parser.add_argument(
        "--sync-cost",
        action="store_true",
        help="only ingest's rate with sync_interval: always vs the default fsync (own brokers)",
    )
    parser.add_argument("--cluster", action="store_true", help="--sync-cost: also a 3-node R3 cluster")
    parser.add_argument(
        "--ack-policies",
        action="store_true",
        help="only the processor's drain with FINCART_ACK_POLICY explicit vs all, taking turns (own broker)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--sync-cost, --ack-policies: turns each one takes")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="only the processor draining growing backlogs (--scale-sizes) into one orders table",
    )
    parser.add_argument(
        "--scale-sizes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[10_000, 100_000, 1_000_000],
        help="--scale: backlogs, comma separated",
    )
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="only the drain by 1 and 2 processors against 1 and 3 embedded NATS nodes (own brokers)",
    )
    args = parser.parse_args()
    if args.quick:
        args.webhooks, args.warmup = 12_000, 500
    args.orders = args.orders or max(1, args.webhooks // 4)
    if min(args.webhooks, args.warmup, args.orders, args.concurrency, args.seed_webhooks, args.rounds) < 1:
        parser.error("--webhooks, --warmup, --orders, --concurrency, --seed-webhooks and --rounds must be positive")
    if args.capacity:
        asyncio.run(capacity(args))
        return
    if args.scale:
        if min(args.scale_sizes) < 1:
            parser.error("--scale-sizes must be positive")
        asyncio.run(scale(args))
        return
    if args.ack_policies:
        result = asyncio.run(ack_policies(args))
        print(ack_table(result))
        print(json.dumps(result))
        return
    if args.sync_cost:
        result = asyncio.run(sync_cost(args))
        print(sync_table(result))
        print(json.dumps(result))
        return
    result = asyncio.run(run(args))
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
