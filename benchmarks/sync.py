"""Sync fan-out benchmark: N concurrent WebSocket clients, events at R/s, publish -> client latency.

Starts a real sync process (against the local or embedded NATS and PostgreSQL), connects the clients
from two helper processes, publishes OrderEvents on ORDER_EVENTS at the given rate and measures, per
received frame, the time from publish to receipt. Each event carries its publish time (ns) in
``last_webhook_id``. Most clients follow one order (``?order=``, a shop's order page); ``--firehose``
of them receive every event (the live table). The raw limit is a plain NATS subscriber on the same
subjects in the same run; the ratios compare against it. CPU per client is the sync process's CPU
time divided by clients and run time. The last line printed is one JSON object.

    uv run python benchmarks/sync.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nats
from fincart_core.auth import new_token, token_hash
from fincart_core.contracts.events import OrderEvent, OrderState
from fincart_core.db.admin import drop_database, ensure_database, with_database
from fincart_core.db.migrate import upgrade
from fincart_core.partition import Topology
from fincart_core.streams import ensure_streams
from fincart_devstack.localstack import ServiceProcess, find_binary, free_port, start_infra
from procstat import cpu_seconds, peak_rss_mb, raise_nofile, rss_mb

CONNECT_CONCURRENCY = 50
CONNECT_ATTEMPTS = 5
EPHEMERAL_PORTS = 28_000  # Linux's default ip_local_port_range towards one address:port
STAMP = datetime(2026, 1, 1, tzinfo=UTC)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_ms(frame: dict) -> float:
    sent_ns = int(frame["order"]["last_webhook_id"].rsplit(":", 1)[1])
    return (time.time_ns() - sent_ns) / 1e6


# ---- client processes -------------------------------------------------------------------------------


async def _clients(urls: list[str], token: str, ready: mp.Event, stop: mp.Event, out: mp.Queue) -> None:  # type: ignore[valid-type]
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    lat: dict[bool, list[float]] = {True: [], False: []}  # firehose?, per-order
    closes: dict[str, int] = {}
    sockets = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(url: str):  # type: ignore[no-untyped-def]
        for attempt in range(CONNECT_ATTEMPTS):
            async with gate:
                ws = await connect(
                    url,
                    open_timeout=30,
                    max_queue=None,
                    compression=None,
                    additional_headers={"Authorization": f"Bearer {token}"},
                )
                try:
                    while True:  # snapshot pages
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if msg["type"] == "snapshot" and msg["last"]:
                            return ws
                except ConnectionClosed as exc:  # 1013: sync's database is busy, try again later (as a page does)
                    if getattr(exc.rcvd, "code", None) != 1013 or attempt == CONNECT_ATTEMPTS - 1:
                        raise
            await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def read(ws, firehose: bool) -> None:  # type: ignore[no-untyped-def]
        bucket = lat[firehose]
        try:
            async for raw in ws:
                if raw.startswith('{"type":"event"'):
                    bucket.append(latency_ms(json.loads(raw)))
        except Exception as exc:
            key = getattr(getattr(exc, "rcvd", None), "code", None) or type(exc).__name__
            closes[str(key)] = closes.get(str(key), 0) + 1

    sockets = await asyncio.gather(*(open_one(u) for u in urls))
    readers = [asyncio.create_task(read(ws, "order=" not in u)) for ws, u in zip(sockets, urls, strict=True)]
    ready.set()
    await asyncio.to_thread(stop.wait)
    for ws in sockets:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2)
    await asyncio.gather(*readers, return_exceptions=True)
    out.put({"firehose": lat[True], "order": lat[False], "closes": closes})


def client_process(urls: list[str], token: str, ready: mp.Event, stop: mp.Event, out: mp.Queue) -> None:  # type: ignore[valid-type]
    asyncio.run(_clients(urls, token, ready, stop, out))


# ---- main ------------------------------------------------------------------------------------------


def event_bytes(order_id: str, version: int) -> bytes:
    state = OrderState(
        id=uuid.uuid5(uuid.NAMESPACE_URL, order_id),
        shopify_order_id=order_id,
        status="CONFIRMED",
        total_price=Decimal("120.00"),
        shipping_fee=Decimal("5.99"),
        version=version,
        last_external_updated_at=STAMP,
        last_webhook_id=f"bench:{time.time_ns()}",
        created_at=STAMP,
        updated_at=STAMP,
    )
    return OrderEvent(order=state).model_dump_json().encode()


async def publish(js, topology: Topology, orders: list[str], rate: float, duration: float) -> int:  # type: ignore[no-untyped-def]
    """Publish at ``rate``/s for ``duration`` s, round-robin over ``orders``; returns how many were sent."""
    versions = dict.fromkeys(orders, 0)
    start = time.monotonic()
    total = int(rate * duration)
    pending: list[asyncio.Future] = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        oid = orders[i % len(orders)]
        versions[oid] += 1
        pending.append(
            asyncio.ensure_future(
                js.publish(
                    topology.event_subject_for(oid),
                    event_bytes(oid, versions[oid]),
                    headers={"Nats-Msg-Id": f"{oid}:{versions[oid]}"},
                )
            )
        )
        if len(pending) >= 200:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return total


async def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="fincart-bench-sync-"))
    infra = start_infra(use_defaults_if_reachable=True, workdir=workdir)
    name = f"bench_sync_{uuid.uuid4().hex[:8]}"
    topology = Topology(16, name.replace("_", "-"))
    database_url = with_database(infra.database_url, name)
    await ensure_database(database_url)
    await asyncio.to_thread(upgrade, database_url)
    port = free_port()
    token = new_token()  # one read token for every client: its cap is lifted to the client count
    sync = ServiceProcess(
        name="sync",
        argv=[find_binary("fincart-sync")],
        log_path=workdir / "sync.log",
        port=port,
        env={
            "FINCART_NATS_URL": infra.nats_url,
            "FINCART_DATABASE_URL": database_url,
            "FINCART_PARTITIONS": "16",
            "FINCART_NATS_PREFIX": topology.prefix,
            "FINCART_HTTP_PORT": str(port),
            "FINCART_LOG_LEVEL": "WARNING",
            "FINCART_CLIENT_QUEUE_SIZE": str(args.queue_size),
            "FINCART_READ_TOKEN_HASHES": token_hash(token),
            "FINCART_WS_MAX_CONNECTIONS_PER_TOKEN": str(max(args.clients, 1)),
            "FINCART_WS_MAX_CONNECTIONS": str(max(args.clients, 2000)),
        },
    )
    nc = await nats.connect(infra.nats_url)
    procs: list[mp.Process] = []
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology)
        sync.start()
        rss_before = rss_mb(sync.pid or 0)
        firehose = min(args.firehose, args.clients)
        orders = [f"bench-{i}" for i in range(args.clients - firehose)] or ["bench-0"]
        urls = [f"ws://127.0.0.1:{port}/sync" for _ in range(firehose)]
        urls += [f"ws://127.0.0.1:{port}/sync?order={oid}" for oid in orders[: args.clients - firehose]]
        ctx = mp.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        readies = []
        for part in range(args.client_procs):
            ready = ctx.Event()
            proc = ctx.Process(target=client_process, args=(urls[part :: args.client_procs], token, ready, stop, out))
            proc.start()
            procs.append(proc)
            readies.append(ready)
        t_connect = time.monotonic()
        for ready in readies:
            if not await asyncio.to_thread(ready.wait, max(120, args.clients / 20)):
                raise RuntimeError(f"clients did not connect within {max(120, args.clients / 20):.0f} s")
        connect_s = time.monotonic() - t_connect
        rss_connected = rss_mb(sync.pid or 0)

        raw: list[float] = []  # the raw limit: a plain NATS subscriber on the same events

        async def on_raw(msg) -> None:  # type: ignore[no-untyped-def]
            raw.append(latency_ms(json.loads(msg.data)))

        raw_sub = await nc.subscribe(topology.events_wildcard, cb=on_raw)
        cpu0, t0 = cpu_seconds(sync.pid or 0), time.monotonic()
        sent = await publish(js, topology, orders, args.rate, args.duration)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(args.drain)
        cpu = cpu_seconds(sync.pid or 0) - cpu0
        peak_rss = peak_rss_mb(sync.pid or 0)
        await raw_sub.unsubscribe()
        stop.set()
        results = [await asyncio.to_thread(out.get, True, 60) for _ in procs]
    finally:
        stop_all = [p for p in procs if p.is_alive()]
        for p in stop_all:
            p.join(10)
        sync.stop()
        await nc.close()
        await drop_database(database_url)
        cleanup = await nats.connect(infra.nats_url)
        for stream in (topology.orders_stream, topology.events_stream, topology.dlq_stream):
            with contextlib.suppress(Exception):
                await cleanup.jetstream().delete_stream(stream)
        await cleanup.close()
        infra.stop()

    all_lat = [x for r in results for x in r["firehose"] + r["order"]]
    fire_lat = [x for r in results for x in r["firehose"]]
    closes: dict[str, int] = {}
    for r in results:
        for k, v in r["closes"].items():
            closes[k] = closes.get(k, 0) + v
    expected = sent * firehose + sent  # every firehose client gets all; each event also reaches its order's client
    if args.clients - firehose == 0:
        expected = sent * firehose
    p50, p99 = percentile(all_lat, 0.5), percentile(all_lat, 0.99)
    raw_p50, raw_p99 = percentile(raw, 0.5), percentile(raw, 0.99)
    return {
        "clients": args.clients,
        "firehose_clients": firehose,
        "events_per_s": round(sent / elapsed, 1),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "firehose_p50_ms": round(percentile(fire_lat, 0.5), 2),
        "firehose_p99_ms": round(percentile(fire_lat, 0.99), 2),
        "raw_nats_p50_ms": round(raw_p50, 3),
        "raw_nats_p99_ms": round(raw_p99, 3),
        "p50_ratio_vs_raw": round(p50 / raw_p50, 1) if raw_p50 else None,
        "p99_ratio_vs_raw": round(p99 / raw_p99, 1) if raw_p99 else None,
        "frames_received": len(all_lat),
        "frames_expected": expected,
        "fanout_frames_per_s": round(len(all_lat) / elapsed),
        "sync_cpu_percent": round(100 * cpu / (elapsed + args.drain), 1),
        "cpu_ms_per_client_per_s": round(1000 * cpu / (elapsed + args.drain) / args.clients, 3),
        "connect_s": round(connect_s, 1),
        "closes": closes,
        "duration_s": round(elapsed, 1),
        "sync_rss_idle_mb": round(rss_before, 1),
        "sync_peak_rss_mb": round(peak_rss, 1),
        "rss_kb_per_client": round(1024 * (rss_connected - rss_before) / args.clients, 1),
    }


def main() -> None:
    # options in the same style as pipeline.py's: each benchmark is a standalone script with its own
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--firehose", type=int, default=10, help="clients receiving every event (the rest: one order)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of publishing")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds to wait for the tail after publishing")
    parser.add_argument("--client-procs", type=int, default=2, help="processes hosting the clients")
    parser.add_argument("--queue-size", type=int, default=2048, help="FINCART_CLIENT_QUEUE_SIZE of the sync process")
    parser.add_argument("--quick", action="store_true", help="10 s of publishing (finishes in under a minute)")
    parser.add_argument(
        "--scale",
        type=lambda v: [int(x) for x in v.split(",")],
        default=None,
        help="client counts, comma separated (e.g. 1000,5000,10000): one run and JSON line each, "
        "capped by the open-file limit (raised as far as allowed) and loopback's ephemeral ports",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration = 10.0
    if min(args.clients, args.client_procs, *(args.scale or [1])) < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--clients, --scale, --rate, --duration and --client-procs must be positive")
    if args.scale:
        # a client holds a descriptor in its process and one in sync's; NATS, PostgreSQL and logs need some more
        limit = raise_nofile(max(args.scale) + 1000)
        for clients in args.scale:
            args.clients = min(clients, limit - 1000, EPHEMERAL_PORTS)
            result = asyncio.run(run(args))
            print(json.dumps({"clients_wanted": clients, "nofile_limit": limit, **result}), flush=True)
        return
    result = asyncio.run(run(args))
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
