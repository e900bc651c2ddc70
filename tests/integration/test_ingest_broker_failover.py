"""A NATS node killed -9 mid-load and restarted, or hung (SIGSTOP: no RST, as a node cut off by the network)
and resumed: the real ingest and processor on the local 3-node JetStream cluster (R3 streams) ride it out.
Every webhook answered 200 is applied once (chaos verifier's I1-I5, I7), and every order's change events on
ORDER_EVENTS are its versions 1..n, once each, in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from fincart_chaos.load import LoadStats, run_load
from fincart_chaos.verify import ALL_INVARIANTS, Context, read_history, settle, verify
from fincart_chaos.workload import Request, make_webhook
from fincart_core.contracts.events import OrderEvent
from fincart_core.streams import connect
from fincart_devstack.localstack import EmbeddedNats, NatsCluster, ServiceProcess, find_binary, free_port

from tests.support.ingest_service import SECRET, start_ingest

ORDERS, UPDATES = 60, 25
WAIT_S = 180.0


async def _until(check, what: str, timeout: float = WAIT_S) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"{what} not reached within {timeout:.0f}s"
        await asyncio.sleep(0.1)


def _serves(node: EmbeddedNats, client: str) -> bool:
    """Whether ``client`` (its connection name) is connected to ``node`` (the server's /connz)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.monitor_port}/connz", timeout=5) as response:
        return any(c.get("name") == client for c in json.loads(response.read()).get("connections") or [])


@pytest.mark.parametrize("fault", ["kill-orders-leader", "hang-ingest-server"])
async def test_a_nats_node_lost_mid_load_loses_and_duplicates_nothing(
    service_env: dict[str, str],
    database_url: str,
    topology,
    tmp_path: Path,
    fault: str,  # type: ignore[no-untyped-def]
) -> None:
    cluster = NatsCluster(tmp_path / "nats", 3)
    cluster.start()
    env = {**service_env, "FINCART_NATS_URL": cluster.url, "FINCART_STREAM_REPLICAS": "3"}
    services: list[ServiceProcess] = []
    nc = None
    try:
        services.append(start_ingest(env, tmp_path))
        port = free_port()
        services.append(
            ServiceProcess(
                name="processor",
                argv=[find_binary("fincart-processor")],
                log_path=tmp_path / "processor.log",
                env={**env, "FINCART_HTTP_PORT": str(port), "FINCART_FETCH_TIMEOUT_S": "0.2"},
                port=port,
            )
        )
        services[1].start()
        requests = [
            Request(make_webhook(f"o{topology.prefix}-{i % ORDERS}", i // ORDERS, seed=5), "valid")
            for i in range(ORDERS * UPDATES)
        ]
        stats = LoadStats(total=len(requests))
        load = asyncio.create_task(
            run_load(requests, services[0].base_url, SECRET, concurrency=8, rate=150, stats=stats)
        )

        nc = await connect(cluster.url, "failover-test")
        js = nc.jetstream()
        await _until(lambda: stats.acked >= len(requests) // 4, "a quarter of the load acknowledged")
        if fault == "kill-orders-leader":  # the node whose loss hurts most: publishes wait for a new leader
            leader = (await js.stream_info(topology.orders_stream)).cluster.leader
            victim = next(node for node in cluster.nodes if node.name == leader)
            victim.kill()
            killed_at = stats.acked
            await asyncio.sleep(3)
            victim.start()
        else:  # ingest's socket stays open and silent: only its pings can tell
            victim = next(node for node in cluster.nodes if _serves(node, "fincart-ingest"))
            assert victim.pid is not None
            os.killpg(victim.pid, signal.SIGSTOP)
            killed_at = stats.acked
            try:  # ingest finds out by its pings and moves on: webhooks are acknowledged while the node hangs
                await _until(lambda: stats.acked >= killed_at + 100, "acknowledgements with a node hung", 90)
            finally:
                os.killpg(victim.pid, signal.SIGCONT)
        await asyncio.to_thread(cluster.wait_ready)
        ledger = await asyncio.wait_for(load, WAIT_S)
        if fault == "hang-ingest-server":  # its JSON log says where it went
            moved = [json.loads(line) for line in services[0].log_tail(2000).splitlines() if "nats reconnected" in line]
            assert any(entry["nats_server"] != victim.url.removeprefix("nats://") for entry in moved), moved
        assert killed_at < len(requests), "the kill should land mid-load"
        assert all(service.running for service in services), [s.log_tail() for s in services]

        order_ids = sorted({r.webhook.order_id for r in requests})
        assert await settle(database_url, order_ids, len(requests), WAIT_S)
        history = await read_history(database_url, order_ids)
        # no sync client observes this run (I6): the events stream is read below, every applied version in order
        result = verify(Context(requests, ledger, history, None), set(ALL_INVARIANTS) - {"I6"})
        assert result.anomalies == [] and result.verdict == "Pass", (result.reason, result.anomalies)
        assert result.counts.acked == len(requests) and result.counts.lost == result.counts.duplicated == 0

        versions = {row.order_id: row.version for row in history.orders}
        events: dict[str, list[int]] = defaultdict(list)

        async def all_events() -> None:
            events.clear()
            info = await js.stream_info(topology.events_stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
                event = OrderEvent.model_validate_json((await js.get_msg(topology.events_stream, seq)).data)
                events[event.order.shopify_order_id].append(event.order.version)

        deadline = asyncio.get_running_loop().time() + WAIT_S
        while (await all_events()) or sum(map(len, events.values())) < sum(versions.values()):
            assert asyncio.get_running_loop().time() < deadline, "events of every applied version"
            await asyncio.sleep(0.5)
        assert {order: list(range(1, v + 1)) for order, v in versions.items()} == dict(events)
    finally:
        if nc is not None:
            await nc.close()
        for service in services:
            service.stop()
        cluster.stop()
