"""Ingress benchmark: what nginx with the chart's Ingress rules adds to a webhook's ack latency.

One real ingest process (no processor: the ack is ingest's PubAck) and, in front of it, the nginx that
``fincart-chaos run --local --via-ingress`` uses (fincart_devstack.ingress_proxy). fincart-chaos's load client
(aiohttp, keep-alive) sends signed webhooks in alternating rounds straight to ingest (the baseline) and
through nginx, so that both see the same machine load; per concurrency level it reports ack p50/p99 of
each, the added milliseconds, the ratios and the requests per second. The last line printed is one JSON
object.

    uv run python benchmarks/ingress.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis
from fincart_chaos.load import run_load
from fincart_chaos.report import percentiles
from fincart_chaos.workload import Request, make_webhook
from fincart_core.db.admin import drop_database
from fincart_core.partition import Topology
from fincart_core.streams import delete_streams
from fincart_devstack.devstack import DevStack, StackConfig
from fincart_devstack.localstack import start_infra

SECRET = "bench-ingress-secret"
PARTITIONS = 4
MODES = ("direct", "ingress")


async def measure(urls: dict[str, str], args: argparse.Namespace, run: str) -> dict:
    result: dict[str, object] = {}
    for concurrency in args.concurrency:
        latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
        seconds = dict.fromkeys(MODES, 0.0)
        # round 0 warms connections and pools and is not counted; then the modes alternate
        for round_no in range(args.rounds + 1):
            for mode in MODES if round_no % 2 else reversed(MODES):
                batch = [
                    Request(make_webhook(f"order_bench_{run}_{concurrency}_{round_no}_{mode}_{i % 50}", i, 1), "valid")
                    for i in range(args.requests)
                ]
                started = time.perf_counter()
                entries = await run_load(batch, urls[mode], SECRET, concurrency=concurrency)
                elapsed = time.perf_counter() - started
                if failed := [e.status for e in entries if not e.acked]:
                    raise RuntimeError(f"{len(failed)} webhooks via {mode} not acked (statuses {set(failed)})")
                if round_no:
                    latencies[mode].extend(e.latency_ms for e in entries)
                    seconds[mode] += elapsed
        got = {mode: percentiles(latencies[mode]) for mode in MODES}
        rps = {mode: len(latencies[mode]) / seconds[mode] for mode in MODES}
        direct, ingress = got["direct"], got["ingress"]
        assert direct.p50 and direct.p99 and ingress.p50 and ingress.p99
        result[f"c{concurrency}"] = {
            "direct_p50_ms": direct.p50,
            "direct_p99_ms": direct.p99,
            "ingress_p50_ms": ingress.p50,
            "ingress_p99_ms": ingress.p99,
            "added_p50_ms": round(ingress.p50 - direct.p50, 3),
            "added_p99_ms": round(ingress.p99 - direct.p99, 3),
            "p50_ratio": round(ingress.p50 / direct.p50, 3),
            "p99_ratio": round(ingress.p99 / direct.p99, 3),
            "direct_rps": round(rps["direct"]),
            "ingress_rps": round(rps["ingress"]),
            "rps_ratio": round(rps["ingress"] / rps["direct"], 3),
            "requests_per_mode": len(latencies["direct"]),
        }
    return result


async def run(args: argparse.Namespace) -> dict:
    infra = start_infra(use_defaults_if_reachable=True)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-ingress-{run_id}"
    config = StackConfig(
        database=f"bench_ingress_{run_id}",
        partitions=PARTITIONS,
        processors=0,
        nats_prefix=prefix,
        webhook_secret=SECRET,
        ingest_port=0,
        with_sync=False,
        log_level=args.log_level,
        ingress=True,
    )
    stack = DevStack(config, infra, Path(tempfile.mkdtemp(prefix="fincart-bench-ingress-")))
    try:
        await asyncio.to_thread(stack.start)
        assert stack.ingress
        urls = {"direct": stack.ingest_url, "ingress": stack.ingress.base_url}
        result = await measure(urls, args, run_id)
    finally:
        stack.stop()
        await drop_database(stack.database_url)
        await delete_streams(infra.nats_url, Topology(PARTITIONS, prefix))
        redis = aioredis.from_url(infra.redis_url)  # ingest's dedupe marks would live for 48 h
        try:
            async for key in redis.scan_iter(match=f"{prefix}:fincart:*", count=1000):
                await redis.unlink(key)
        finally:
            await redis.aclose()
        infra.stop()
    return {**result, "rounds": args.rounds, "cpus": os.cpu_count()}


def table(result: dict) -> str:
    lines = [
        f"{'concurrency':<13}{'direct p50/p99 ms':<20}{'nginx p50/p99 ms':<20}{'added p50/p99 ms':<20}"
        f"{'ratio p50/p99':<15}{'req/s direct/nginx'}"
    ]
    for key, r in result.items():
        if isinstance(r, dict):
            lines.append(
                f"{key[1:]:<13}{r['direct_p50_ms']:>6.2f} / {r['direct_p99_ms']:<9.2f}"
                f"{r['ingress_p50_ms']:>6.2f} / {r['ingress_p99_ms']:<9.2f}"
                f"{r['added_p50_ms']:>6.2f} / {r['added_p99_ms']:<9.2f}"
                f"{r['p50_ratio']:>5.2f} / {r['p99_ratio']:<6.2f}"
                f"{r['direct_rps']:>6,} / {r['ingress_rps']:,}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[1, 64],
        help="comma-separated requests in flight (default 1,64)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per round and mode")
    parser.add_argument("--rounds", type=int, default=6, help="measured rounds per mode (alternating)")
    parser.add_argument("--log-level", default="WARNING", help="FINCART_LOG_LEVEL of ingest")
    parser.add_argument("--quick", action="store_true", help="500 requests x 4 rounds")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 500, 4
    if min(args.requests, args.rounds, *args.concurrency) < 1:
        parser.error("--requests, --rounds and every --concurrency must be positive")
    result = asyncio.run(run(args))
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
