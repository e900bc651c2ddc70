"""Fault proxy benchmark: what ``fincart-chaos proxy`` adds to a round trip when no fault is set.

Starts the proxy as its own process (as run --local and the chart do) with two routes, to NATS and to
PostgreSQL (the local or embedded ones), and measures, alternating direct and proxied on every iteration so
that machine noise hits both alike: a JetStream publish -> PubAck (what ingest waits for per webhook) and a
PostgreSQL ``SELECT 1`` (one processor query). The raw limit is the direct connection in the same run.
The last line printed is one JSON object.

    uv run python benchmarks/proxy.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import nats
from fincart_chaos.local import FaultProxyProcess, host_port, via_proxy
from fincart_chaos.report import percentiles
from fincart_core.settings import to_asyncpg_url
from fincart_devstack.localstack import start_infra


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def measure(
    direct: Callable[[], Awaitable[object]], proxied: Callable[[], Awaitable[object]], iterations: int, warmup: int
) -> dict[str, float | None]:
    times: dict[str, list[float]] = {"direct": [], "proxied": []}
    for i in range(warmup + iterations):
        pair = ((direct, "direct"), (proxied, "proxied")) if i % 2 else ((proxied, "proxied"), (direct, "direct"))
        for call, key in pair:
            elapsed = await timed(call)
            if i >= warmup:
                times[key].append(elapsed)
    d, p = percentiles(times["direct"]), percentiles(times["proxied"])
    return {
        "direct_p50_ms": d.p50,
        "direct_p99_ms": d.p99,
        "proxied_p50_ms": p.p50,
        "proxied_p99_ms": p.p99,
        "added_p50_ms": round(p.p50 - d.p50, 3) if p.p50 is not None and d.p50 is not None else None,
        "added_p99_ms": round(p.p99 - d.p99, 3) if p.p99 is not None and d.p99 is not None else None,
        "p50_ratio": round(p.p50 / d.p50, 3) if p.p50 and d.p50 else None,
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    infra = start_infra(use_defaults_if_reachable=True)
    proxy = FaultProxyProcess(
        {"nats": host_port(infra.nats_url), "postgres": host_port(infra.database_url)}, Path(infra.workdir or ".")
    )
    proxy.start()
    stream = f"BENCH_PROXY_{uuid.uuid4().hex[:8]}"
    try:
        nc_direct = await nats.connect(infra.nats_url)
        nc_proxied = await nats.connect(via_proxy(infra.nats_url, proxy.listen["nats"]))
        js_direct, js_proxied = nc_direct.jetstream(), nc_proxied.jetstream()
        await js_direct.add_stream(name=stream, subjects=[f"{stream}.>"])
        pg_direct = await asyncpg.connect(to_asyncpg_url(infra.database_url))
        pg_proxied = await asyncpg.connect(to_asyncpg_url(via_proxy(infra.database_url, proxy.listen["postgres"])))
        body = b"x" * args.payload
        result: dict[str, object] = {"iterations": args.iterations, "payload_bytes": args.payload}
        for key, value in (
            await measure(
                lambda: js_direct.publish(f"{stream}.a", body),
                lambda: js_proxied.publish(f"{stream}.a", body),
                args.iterations,
                args.warmup,
            )
        ).items():
            result[f"nats_pubAck_{key}"] = value
        for key, value in (
            await measure(
                lambda: pg_direct.fetchval("SELECT 1"),
                lambda: pg_proxied.fetchval("SELECT 1"),
                args.iterations,
                args.warmup,
            )
        ).items():
            result[f"postgres_{key}"] = value
        await js_direct.delete_stream(stream)
        for conn in (pg_direct, pg_proxied):
            await conn.close()
        for nc in (nc_direct, nc_proxied):
            await nc.close()
        return result
    finally:
        proxy.stop()
        infra.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=5000, help="timed round trips per path (default 5,000)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--payload", type=int, default=600, help="bytes per JetStream message (a webhook's size)")
    parser.add_argument("--quick", action="store_true", help="1,000 round trips per path")
    args = parser.parse_args()
    if args.quick:
        args.iterations = 1000
    result = asyncio.run(run(args))
    print(f"{'round trip':<22}{'direct p50/p99 ms':>20}{'proxied p50/p99 ms':>22}{'added p50/p99 ms':>20}")
    for name, prefix in (("JetStream PubAck", "nats_pubAck_"), ("PostgreSQL SELECT 1", "postgres_")):
        print(
            f"{name:<22}{result[prefix + 'direct_p50_ms']:>10} / {result[prefix + 'direct_p99_ms']:<8}"
            f"{result[prefix + 'proxied_p50_ms']:>12} / {result[prefix + 'proxied_p99_ms']:<8}"
            f"{result[prefix + 'added_p50_ms']:>10} / {result[prefix + 'added_p99_ms']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
